"""TV-L1 optical flow in PyTorch, batched over frame pairs, following OpenCV's CPU DualTVL1.

The scheme is Zach, Pock and Bischof's duality-based TV-L1 as implemented in
``opencv_contrib/modules/optflow/src/tvl1flow.cpp`` (``cv::optflow::DualTVL1OpticalFlow``),
reproduced step by step so the flow matches OpenCV's:

- input: uint8 grayscale used as 0-255 floats (OpenCV multiplies float input by 255);
- pyramid: each level is the previous one resized by ``scale_step`` with
  OpenCV's bilinear ``resize`` (size ``round(n * 0.8)``, coordinate scale
  exactly 1/0.8, clamped borders), stopping before a side drops below 16;
  flow starts at zero on the coarsest level and is upsampled bilinearly and
  divided by ``scale_step`` on the way down;
- per level: centered gradient of I1 (one-sided, halved, at the borders);
  the dual variable p reset once per level; per warp, I1 and its gradient
  warped by the current flow with OpenCV's ``remap(INTER_CUBIC)``: Keys
  cubic with a = -0.75 at the exact coordinates (OpenCV 5; OpenCV 4 rounded
  them to 1/32 pixel), zero outside the image;
- per warp, up to ``outer_iterations`` rounds of a 5x5 median filter of the
  flow (replicated border) followed by up to ``inner_iterations`` iterations of
  the thresholding step, the flow update with the divergence of p (backward
  differences) and the dual step (forward differences), stopping when the
  squared flow update summed over the image drops to ``epsilon**2 * H * W``;
  the error carries over the outer rounds, as in OpenCV.

Each pair in a batch keeps its own stopping state, so a batch computes what
the pairs would compute one by one. The same code runs on CPU and CUDA;
``compile=True`` fuses the inner iteration with ``torch.compile``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.tvl1_params import TVL1Params

__all__ = ["TVL1Params", "tvl1", "rgb_to_gray", "pyramid_sizes"]


def opencv_tvl1(p: TVL1Params = TVL1Params()):
    """OpenCV's own DualTVL1 with the same parameters: the reference this module follows."""
    import cv2

    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps, epsilon=p.epsilon,
        innnerIterations=p.inner_iterations, outerIterations=p.outer_iterations, scaleStep=p.scale_step,
        gamma=0.0, medianFiltering=p.median_filtering)


# ------------------------------------------------------------------ colour


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> uint8 gray (..., H, W), bit-exact with ``cv2.cvtColor(RGB2GRAY)``.

    OpenCV's fixed-point BT.601: (9798 R + 19235 G + 3735 B + 2^14) >> 15.
    """
    x = rgb.to(torch.int32)
    y = (x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735 + 16384) >> 15
    return y.to(torch.uint8)


# ------------------------------------------------------------------ resize


def pyramid_sizes(h: int, w: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Level sizes as OpenCV builds them: round() each level from the previous; stop below 16."""
    sizes = [(h, w)]
    for _ in range(1, nscales):
        ph, pw = sizes[-1]
        nh, nw = round(ph * scale_step), round(pw * scale_step)  # saturate_cast<int>: round half to even
        if nw < 16 or nh < 16:
            break
        sizes.append((nh, nw))
    return sizes


def _linear_taps(n_out: int, n_in: int, scale: float, device) -> tuple[torch.Tensor, ...]:
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis (clamped borders)."""
    d = np.arange(n_out, dtype=np.float64)
    f = (d + 0.5) * scale - 0.5  # in double, as OpenCV; only the fraction is rounded to float
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    low, high = s < 0, s >= n_in - 1
    f[low], s[low] = 0, 0
    f[high], s[high] = 0, n_in - 1
    s1 = np.minimum(s + 1, n_in - 1)
    as_t = lambda a: torch.from_numpy(a).to(device)
    return as_t(s), as_t(s1), as_t((np.float32(1) - f).astype(np.float32)), as_t(f)


def resize_linear(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> torch.Tensor:
    """OpenCV's bilinear ``resize`` of (B, H, W) float images: horizontal pass, then vertical.

    ``scale`` is the source step per output pixel (y, x); by default the size ratio,
    as ``cv2.resize(src, dsize)`` computes it. The pyramid passes 1/0.8 exactly,
    as ``cv2.resize(src, None, fx=0.8, fy=0.8)`` does.
    """
    h, w = x.shape[-2:]
    oh, ow = size
    sy, sx = scale if scale is not None else (h / oh, w / ow)
    x0, x1, wx0, wx1 = _linear_taps(ow, w, sx, x.device)
    y0, y1, wy0, wy1 = _linear_taps(oh, h, sy, x.device)
    t = x[..., x0] * wx0 + x[..., x1] * wx1
    return t[..., y0, :] * wy0[:, None] + t[..., y1, :] * wy1[:, None]


# --------------------------------------------------------------- stencils


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * central differences; 0.5 * one-sided differences on the border rows/columns."""
    dx = torch.empty_like(img)
    dy = torch.empty_like(img)
    dx[..., 1:-1] = 0.5 * (img[..., 2:] - img[..., :-2])
    dx[..., 0] = 0.5 * (img[..., 1] - img[..., 0])
    dx[..., -1] = 0.5 * (img[..., -1] - img[..., -2])
    dy[..., 1:-1, :] = 0.5 * (img[..., 2:, :] - img[..., :-2, :])
    dy[..., 0, :] = 0.5 * (img[..., 1, :] - img[..., 0, :])
    dy[..., -1, :] = 0.5 * (img[..., -1, :] - img[..., -2, :])
    return dx, dy


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort on n (a power of two) wires."""
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _median25_network() -> list[tuple[int, int, bool, bool]]:
    """A min/max network whose wire 12 ends as the median of wires 0-24.

    Batcher's network for 32 wires with wires 25-31 fixed at +inf: a
    comparator against an infinite wire only relabels wires, so those are
    folded away by renaming; then every comparator that cannot reach the
    median's wire is pruned (113 remain). Each entry is (a, b, keep_min,
    keep_max): wire a takes the min, b the max, each computed only if used later.
    """
    wire = list(range(32))  # logical wire -> physical slot; slots 25-31 hold +inf
    ops = []
    for a, b in _batcher_pairs(32):
        pa, pb = wire[a], wire[b]
        if pb >= 25:
            continue  # min(x, inf) = x stays on a, inf stays on b
        if pa >= 25:
            wire[a], wire[b] = pb, pa  # the finite value moves down to a
            continue
        ops.append((pa, pb))
    live, net = {wire[12]}, []
    for pa, pb in reversed(ops):
        need_a, need_b = pa in live, pb in live
        if need_a or need_b:
            net.append((pa, pb, need_a, need_b))
            live |= {pa, pb}
    net.reverse()
    return net, wire[12]


_MEDIAN25, _MEDIAN25_OUT = _median25_network()


def median5(u: torch.Tensor) -> torch.Tensor:
    """5x5 median with replicated border, as ``cv2.medianBlur(u, 5)`` on float images.

    A selection network of min/max operations (no sort), so it vectorizes and fuses.
    """
    h, w = u.shape[-2:]
    padded = F.pad(u.reshape(-1, 1, h, w), (2, 2, 2, 2), mode="replicate").reshape(*u.shape[:-2], h + 4, w + 4)
    v = [padded[..., i:i + h, j:j + w] for i in range(5) for j in range(5)]
    for a, b, keep_min, keep_max in _MEDIAN25:
        lo = torch.minimum(v[a], v[b]) if keep_min else None
        if keep_max:
            v[b] = torch.maximum(v[a], v[b])
        if keep_min:
            v[a] = lo
    return v[_MEDIAN25_OUT]


# ------------------------------------------------------------------ warping


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys cubic (a = -0.75, OpenCV's interpolateCubic) weights of the 4 taps for fractions ``t``: (..., 4)."""
    A = -0.75
    c0 = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A
    c1 = ((A + 2) * t - (A + 3)) * t * t + 1
    c2 = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1
    return torch.stack([c0, c1, c2, 1 - c0 - c1 - c2], dim=-1)


def remap_cubic(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) images at (x + u1, y + u2) like ``cv2.remap(..., INTER_CUBIC)``, zero outside.

    The 4x4 taps around each point use Keys' cubic with a = -0.75 at the exact
    float coordinate, which is what OpenCV 5 computes (OpenCV 4 rounded
    coordinates to 1/32 pixel first); taps outside the image count as 0
    (``BORDER_CONSTANT``).
    """
    b, c, h, w = images.shape
    dev = images.device
    x = torch.arange(w, device=dev, dtype=torch.float32) + u1
    y = torch.arange(h, device=dev, dtype=torch.float32)[:, None] + u2
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = cubic_weights(x - x0), cubic_weights(y - y0)  # (B, H, W, 4)
    ix, iy = x0.to(torch.int64) - 1, y0.to(torch.int64) - 1  # the first of the 4 taps
    flat = images.reshape(b, c, h * w)
    out = torch.zeros_like(images)
    for i in range(4):
        yi = iy + i
        y_ok = (yi >= 0) & (yi < h)
        row = yi.clamp(0, h - 1) * w
        for j in range(4):
            xj = ix + j
            ok = y_ok & (xj >= 0) & (xj < w)
            idx = (row + xj.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
            tap = flat.gather(2, idx).reshape(b, c, h, w)
            weight = torch.where(ok, wy[..., i] * wx[..., j], 0.0)
            out = out + tap * weight.unsqueeze(1)
    return out


# ---------------------------------------------------------------- iterations
#
# The solver keeps the two flow components stacked, U = (u1, u2) as (B, 2, H, W), and their dual
# fields as P (B, 2, 2, H, W) = (p11, p12; p21, p22): every elementwise step then runs once for both
# components, which halves the operator calls that dominate the eager CPU time. The thresholding
# step is a clamp (one pass, no masks), and the stencils write into their outputs in place.

FLT_EPSILON = 1.1920929e-07


def _forward_gradient_stacked(u: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., 2, H, W): forward differences (x, y), zero in the last column / row."""
    g = u.new_zeros(*u.shape[:-2], 2, *u.shape[-2:])
    torch.sub(u[..., 1:], u[..., :-1], out=g[..., 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=g[..., 1, :-1, :])
    return g


def _divergence_stacked(p: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) dual fields (x, y) -> (..., H, W): backward differences, p(-1) = 0."""
    px, py = p[..., 0, :, :], p[..., 1, :, :]
    d = px + py
    d[..., 1:] -= px[..., :-1]
    d[..., 1:, :] -= py[..., :-1, :]
    return d


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero in the last column (x) and last row (y)."""
    return _forward_gradient_stacked(u).unbind(-3)


def divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """Backward differences with v1(., -1) = v2(-1, .) = 0 (the adjoint of forward_gradient)."""
    return _divergence_stacked(torch.stack([v1, v2], dim=-3))


def _warp(I0, stacked, U):
    """Warp I1 and its gradient by the flow U (B, 2, H, W).

    Returns the warped gradient Iw (B, 2, H, W), -|grad|^2 with -inf where it is 0 (so that the
    thresholding step's division gives 0 there, as OpenCV's branch does) and the data term's
    constant part rho_c.
    """
    u1, u2 = U[:, 0], U[:, 1]
    I1w, I1wx, I1wy = remap_cubic(stacked, u1, u2).unbind(1)
    Iw = torch.stack([I1wx, I1wy], dim=1)
    grad = I1wx * I1wx + I1wy * I1wy
    neg_grad = torch.where(grad > 0, -grad, -torch.inf)
    rho_c = I1w - I1wx * u1 - I1wy * u2 - I0
    return Iw, neg_grad, rho_c


def _inner_step(U, P, Iw, neg_grad, rho_c, l_t: float, theta: float, taut: float):
    """One inner iteration: thresholding step, U update, dual update. Returns (U, P, error per pair).

    OpenCV's three-way branch on rho against +-lambda*theta*|grad|^2 is the clamp of -rho/|grad|^2
    to +-lambda*theta: the step is that factor times the warped gradient.
    """
    rho = torch.addcmul(rho_c, Iw[:, 0], U[:, 0]).addcmul_(Iw[:, 1], U[:, 1])
    c = torch.div(rho, neg_grad).clamp_(-l_t, l_t)
    Un = torch.addcmul(U, Iw, c.unsqueeze(1)).add_(_divergence_stacked(P), alpha=theta)
    error = (Un - U).square_().sum(dim=(1, 2, 3))
    G = _forward_gradient_stacked(Un)  # (B, 2, 2, H, W)
    ng = torch.hypot(G[:, :, 0], G[:, :, 1]).mul_(taut).add_(1.0)
    return Un, torch.add(P, G, alpha=taut).div_(ng.unsqueeze(2)), error


def _median(U):
    return (median5(U),)


_KERNELS: dict[bool, tuple] = {}


def _kernels(compile: bool):
    """(warp, median, inner step), compiled once per process when asked; shapes are dynamic."""
    if compile not in _KERNELS:
        fns = (_warp, _median, _inner_step)
        _KERNELS[compile] = tuple(torch.compile(f, dynamic=True) for f in fns) if compile else fns
    return _KERNELS[compile]


def _one_scale(I0, I1, U, p: TVL1Params, compile: bool) -> torch.Tensor:
    """All warps of one pyramid level.

    Each pair stops when OpenCV would stop it: its squared update summed over
    the image reaches ``epsilon**2 * H * W`` (the count carries over the outer
    rounds of a warp). Pairs that stop leave the batch, so a batch costs the
    sum of its pairs' iterations, not the slowest pair's times the batch size.
    """
    warp, median, step = _kernels(compile)
    h, w = I0.shape[-2:]
    scaled_eps = float(np.float32(p.epsilon * p.epsilon * h * w))
    l_t, taut = p.lambda_ * p.theta, p.tau / p.theta
    I1x, I1y = centered_gradient(I1)
    stacked = torch.stack([I1, I1x, I1y], dim=1)
    state = [U, U.new_zeros(U.shape[0], 2, 2, h, w)]  # U, P
    for _ in range(p.warps):
        data = list(warp(I0, stacked, state[0]))
        idx = torch.arange(U.shape[0], device=U.device)  # the pairs still iterating
        sub = list(state)
        for _ in range(p.outer_iterations):
            if p.median_filtering > 1:
                sub[0], = median(sub[0])
            for _ in range(p.inner_iterations):
                *sub, error = step(*sub, *data, l_t, p.theta, taut)
                done = error <= scaled_eps
                if bool(done.any()):
                    for full, part in zip(state, sub):
                        full[idx[done]] = part[done]
                    keep = ~done
                    idx = idx[keep]
                    sub = [t[keep] for t in sub]
                    data = [t[keep] for t in data]
                    if len(idx) == 0:
                        break
            if len(idx) == 0:
                break
        for full, part in zip(state, sub):
            full[idx] = part
    return state[0]


@torch.no_grad()
def tvl1(frame0: torch.Tensor, frame1: torch.Tensor, params: TVL1Params = TVL1Params(),
         compile: bool = False) -> torch.Tensor:
    """Flow from ``frame0`` to ``frame1``: (B, H, W) grayscale, uint8 or floats in 0-255 -> (B, H, W, 2) float32.

    Channel 0 is the horizontal displacement, 1 the vertical, as in OpenCV's output.
    """
    if frame0.shape != frame1.shape or frame0.dim() != 3:
        raise ValueError(f"expected two (B, H, W) batches of the same shape, got {tuple(frame0.shape)} "
                         f"and {tuple(frame1.shape)}")
    if params.median_filtering not in (0, 1, 5):
        raise ValueError(f"median_filtering must be 5 (OpenCV's default) or 1 (off), not {params.median_filtering}")
    I0, I1 = frame0.to(torch.float32), frame1.to(torch.float32)
    sizes = pyramid_sizes(*I0.shape[-2:], params.nscales, params.scale_step)
    step = 1.0 / params.scale_step
    pyr0, pyr1 = [I0], [I1]
    for size in sizes[1:]:
        pyr0.append(resize_linear(pyr0[-1], size, (step, step)))
        pyr1.append(resize_linear(pyr1[-1], size, (step, step)))
    U = I0.new_zeros(I0.shape[0], 2, *sizes[-1])
    for s in range(len(sizes) - 1, -1, -1):
        U = _one_scale(pyr0[s], pyr1[s], U, params, compile)
        if s == 0:
            break
        U = resize_linear(U, sizes[s - 1]) * (1.0 / params.scale_step)
    return U.permute(0, 2, 3, 1).contiguous()
