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
``compile=True`` fuses each step (flow update, dual update, median) into one
kernel with ``torch.compile``.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx.experimental import _config as fx_config

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


def _selection_network(lengths: list[int], ranks: list[int]) -> tuple[list, list[int]]:
    """Min/max steps that take sorted lists (concatenated on wires 0..n-1) to the values of the given ranks.

    Built from Batcher's network for the next power of two with each list on its own group of wires
    and the spare wires at +inf: a comparator against an infinite wire only relabels wires and is
    folded away; one that never exchanges on any input of sorted 0/1 lists never exchanges on any
    sorted input (0-1 principle) and is dropped; then every comparator that cannot reach a wanted
    rank is pruned. Returns [(a, b, keep_min, keep_max)] (wire a takes the min, b the max, each only
    if used later) and the wire holding each wanted rank.
    """
    group = 1 << (max(lengths) - 1).bit_length()
    n_wires = 1 << (group * len(lengths) - 1).bit_length()
    n = sum(lengths)
    first = [group * k + i for k, length in enumerate(lengths) for i in range(length)]
    slot = {w: i for i, w in enumerate(first)}
    slot.update({w: n + i for i, w in enumerate(w for w in range(n_wires) if w not in slot)})
    wire = [slot[w] for w in range(n_wires)]  # logical wire -> slot; slots >= n hold +inf
    ops = []
    for a, b in _batcher_pairs(n_wires):
        pa, pb = wire[a], wire[b]
        if pb >= n:
            continue
        if pa >= n:
            wire[a], wire[b] = pb, pa
            continue
        ops.append((pa, pb))
    sorted01 = [[np.r_[np.zeros(length - k, np.uint8), np.ones(k, np.uint8)] for k in range(length + 1)]
                for length in lengths]
    v = np.array([np.concatenate(c) for c in itertools.product(*sorted01)]).T  # (n, cases)
    exchanging = []
    for a, b in ops:
        if (v[a] > v[b]).any():
            v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
            exchanging.append((a, b))
    outs = [wire[r] for r in ranks]
    assert all((v[o] == (v.sum(0) >= n - r)).all() for o, r in zip(outs, ranks))
    live, net = set(outs), []
    for a, b in reversed(exchanging):
        if a in live or b in live:
            net.append((a, b, a in live, b in live))
            live |= {a, b}
    return net[::-1], outs


def _run_network(net, outs, v: list) -> list:
    """A _selection_network on tensors ``v`` (one per wire, all the same shape): the wanted ranks' tensors."""
    v = list(v)
    for a, b, keep_min, keep_max in net:
        lo = torch.minimum(v[a], v[b]) if keep_min else None
        if keep_max:
            v[b] = torch.maximum(v[a], v[b])
        if keep_min:
            v[a] = lo
    return [v[o] for o in outs]


# The 5x5 median in stages shared between neighbouring windows (90 min/max per pixel instead of 202
# for one network on the 25 values): each column of 5 sorted once, pairs of neighbouring sorted
# columns merged, two such pairs merged (only the ranks that can be the median kept), and the
# window's fifth column joined by the k-th-of-two-sorted-lists identity.
_SORT5 = _selection_network([1] * 5, list(range(5)))
_MERGE_5_5 = _selection_network([5, 5], list(range(10)))
_MERGE_10_10 = _selection_network([10, 10], list(range(7, 13)))


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

def _forward_gradient_stacked(u: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., 2, H, W): forward differences (x, y), zero in the last column / row."""
    if torch.compiler.is_compiling():  # Dynamo takes no strided out=; Inductor fuses this form anyway
        return torch.stack([F.pad(u[..., 1:] - u[..., :-1], (0, 1)),
                            F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))], dim=-3)
    g = u.new_zeros(*u.shape[:-2], 2, *u.shape[-2:])
    torch.sub(u[..., 1:], u[..., :-1], out=g[..., 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=g[..., 1, :-1, :])
    return g


def _divergence_stacked(p: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) dual fields (x, y) -> (..., H, W): backward differences, p(-1) = 0."""
    px, py = p[..., 0, :, :], p[..., 1, :, :]
    if torch.compiler.is_compiling():  # shifted reads: Inductor's loads stay unmasked but for the border
        return px - F.pad(px[..., :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
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


def _update_u(U, P, Iw, neg_grad, rho_c, l_t: float, theta: float):
    """The thresholding step and the flow update of one inner iteration: (new U, squared update per pair).

    OpenCV's three-way branch on rho against +-lambda*theta*|grad|^2 is the clamp of -rho/|grad|^2
    to +-lambda*theta: the step is that factor times the warped gradient. (Where 0 < |grad|^2 <=
    FLT_EPSILON OpenCV's middle branch steps 0 and the clamp -rho/|grad|^2 times the gradient: both
    at most lambda*theta*|grad|, 1.6e-5 px at OpenCV's defaults.)
    """
    rho = torch.addcmul(rho_c, Iw[:, 0], U[:, 0]).addcmul_(Iw[:, 1], U[:, 1])
    c = torch.div(rho, neg_grad).clamp_(-l_t, l_t)
    Un = torch.addcmul(U, Iw, c.unsqueeze(1)).add_(_divergence_stacked(P), alpha=theta)
    return Un, (Un - U).square_().sum(dim=(1, 2, 3))


def _update_p(U, P, taut: float):
    """The dual step of one inner iteration: P moved along the forward gradient of U, then normalized.

    Apart from _update_u: fused together, the compiler recomputes U at each stencil neighbour.
    """
    G = _forward_gradient_stacked(U)  # (B, 2, 2, H, W)
    gx, gy = G[:, :, 0], G[:, :, 1]
    ng = (gx * gx).addcmul_(gy, gy).sqrt_().mul_(taut).add_(1.0)  # as OpenCV; hypot is 4x slower in eager
    return torch.add(P, G, alpha=taut).div_(ng.unsqueeze(2))


def _median_network(padded: torch.Tensor) -> torch.Tensor:
    """The 5x5 median of every window of an already padded (..., H + 4, W + 4) image."""
    h, w = padded.shape[-2] - 4, padded.shape[-1] - 4
    cols = _run_network(*_SORT5, [padded[..., i:i + h, :] for i in range(5)])  # width W + 4
    pairs = _run_network(*_MERGE_5_5, [c[..., :-1] for c in cols] + [c[..., 1:] for c in cols])  # W + 3
    fours = _run_network(*_MERGE_10_10, [t[..., :-2] for t in pairs] + [t[..., 2:] for t in pairs])  # W + 1
    # The 13th of the 4 columns' sorted 20 (x) and the fifth column's sorted 5 (y):
    # min over j of max(x[12 - j], y[j - 1]), of which x's ranks 7-12 take part.
    x = [t[..., :w] for t in fours]  # ranks 7..12
    y = [c[..., 4:] for c in cols]
    med = x[5]
    for j in range(1, 6):
        med = torch.minimum(med, torch.maximum(x[5 - j], y[j - 1]))
    return med


def _replicate_pad2(u: torch.Tensor) -> torch.Tensor:
    h, w = u.shape[-2:]
    return F.pad(u.reshape(-1, 1, h, w), (2, 2, 2, 2), mode="replicate").reshape(*u.shape[:-2], h + 4, w + 4)


def median5(u: torch.Tensor) -> torch.Tensor:
    """5x5 median with replicated border, as ``cv2.medianBlur(u, 5)`` on float images.

    A selection network of min/max operations (no sort), so it vectorizes and fuses. The border is
    padded before the network: in compiled code, replicated reads would be clamped gathers.
    """
    return _median_network(_replicate_pad2(u))


_KERNELS: dict[bool, tuple] = {}


def _compiled(fn):
    """``fn`` compiled for any image size and batch (a batch of 1 gets its own kernels).

    Without duck sizing: otherwise a first batch of 2 pairs would be traced as "batch == the
    component axis" and every other batch size would compile again.
    """
    compiled = torch.compile(fn, dynamic=True)

    def call(*args):
        with fx_config.patch(use_duck_shape=False):
            return compiled(*args)
    return call


def _kernels(compile: bool):
    """(warp, median network, U update, P update), compiled once per process when asked."""
    if compile not in _KERNELS:
        fns = (_warp, _median_network, _update_u, _update_p)
        _KERNELS[compile] = tuple(_compiled(f) for f in fns) if compile else fns
    return _KERNELS[compile]


def _one_scale(I0, I1, U, p: TVL1Params, compile: bool) -> torch.Tensor:
    """All warps of one pyramid level.

    Each pair stops when OpenCV would stop it: its squared update summed over
    the image reaches ``epsilon**2 * H * W`` (the count carries over the outer
    rounds of a warp). Pairs that stop leave the batch, so a batch costs the
    sum of its pairs' iterations, not the slowest pair's times the batch size.
    """
    warp, median, update_u, update_p = _kernels(compile)
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
                sub[0] = median(_replicate_pad2(sub[0]))
            for _ in range(p.inner_iterations):
                U_new, error = update_u(*sub, *data, l_t, p.theta)
                sub = [U_new, update_p(U_new, sub[1], taut)]
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
