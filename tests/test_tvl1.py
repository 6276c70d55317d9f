"""TV-L1 against OpenCV's DualTVL1: building blocks exactly, whole flows within the stated tolerances."""

import cv2
import numpy as np
import pytest
import torch

from models.tvl1 import (TVL1Params, centered_gradient, divergence, forward_gradient, median5, opencv_tvl1,
                         pyramid_sizes, remap_cubic, resize_linear, rgb_to_gray, tvl1)

cv2.setNumThreads(2)


def opencv_flow(a, b, p=TVL1Params()):
    return opencv_tvl1(p).calc(a, b, None)


def ours(a, b, p=TVL1Params(), compile=False):
    return tvl1(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)), p, compile=compile).numpy()


def epe(f, g):
    return np.linalg.norm(f - g, axis=-1)


def gray_crop(rgb, size):
    from pipeline.decode import resize_crop

    return cv2.cvtColor(np.ascontiguousarray(resize_crop(rgb, size, size)), cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def bikes_frames(bikes_mp4):
    import av

    with av.open(bikes_mp4) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(241), c.decode(video=0))]


@pytest.fixture(scope="module")
def demo_frames(tmp_path_factory):
    """Frames of a generated demo video: textured moving background, noise, a moving shape."""
    import av

    from pipeline.demo_data import DemoSettings, generate

    root = tmp_path_factory.mktemp("demo")
    generate(root, DemoSettings(n_train=1, n_test=1, min_duration_s=5, max_duration_s=5, min_action_s=3,
                                max_action_s=3, max_actions=1), progress=False)
    with av.open(str(root / "videos" / "demo_test_0001.mp4")) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# ------------------------------------------------------------ building blocks


def test_gray_is_bit_exact():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    assert np.array_equal(rgb_to_gray(torch.from_numpy(rgb)).numpy(), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_pyramid_sizes_follow_opencv():
    assert pyramid_sizes(224, 224, 5, 0.8) == [(224, 224), (179, 179), (143, 143), (114, 114), (91, 91)]
    assert pyramid_sizes(256, 340, 5, 0.8) == [(256, 340), (205, 272), (164, 218), (131, 174), (105, 139)]
    assert pyramid_sizes(24, 24, 5, 0.8) == [(24, 24), (19, 19)]  # stops before a side drops below 16


def test_resize_matches_opencv():
    img = (np.random.default_rng(0).random((224, 224)) * 255).astype(np.float32)
    down = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours_down = resize_linear(torch.from_numpy(img)[None], down.shape, (1.25, 1.25))[0].numpy()
    assert ours_down.shape == down.shape == (179, 179)
    # Same taps and weights; only the last bits of the arithmetic differ (OpenCV's SIMD order).
    assert np.abs(ours_down - down).max() < 1e-4
    up = cv2.resize(img[:91, :91], (114, 114))
    assert np.abs(resize_linear(torch.from_numpy(img[:91, :91].copy())[None], (114, 114))[0].numpy() - up).max() < 1e-4


def test_median_is_bit_exact_including_ties():
    rng = np.random.default_rng(0)
    for ties in (False, True):
        x = rng.standard_normal((3, 29, 37)).astype(np.float32)
        if ties:
            x = np.round(x * 2).astype(np.float32)
        want = np.stack([cv2.medianBlur(a, 5) for a in x])
        assert np.array_equal(median5(torch.from_numpy(x)).numpy(), want)


def test_remap_cubic_matches_opencv():
    rng = np.random.default_rng(0)
    img = (rng.random((40, 50)) * 255).astype(np.float32)
    u1 = (rng.standard_normal((40, 50)) * 4).astype(np.float32)
    u2 = (rng.standard_normal((40, 50)) * 4).astype(np.float32)
    mx = np.arange(50, dtype=np.float32)[None, :] + u1
    my = np.arange(40, dtype=np.float32)[:, None] + u2
    want = cv2.remap(img, mx, my, cv2.INTER_CUBIC)  # BORDER_CONSTANT 0, as TV-L1 uses it
    got = remap_cubic(torch.from_numpy(img)[None, None], torch.from_numpy(u1)[None], torch.from_numpy(u2)[None])
    assert np.abs(got[0, 0].numpy() - want).max() < 1e-3  # values up to 255: float rounding only


def test_stencils_by_hand():
    x = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 3.0, 9.0]]])
    dx, dy = centered_gradient(x)
    assert dx.tolist() == [[[0.5, 1.5, 1.0], [1.5, 4.5, 3.0]]]
    assert dy.tolist() == [[[-0.5, 0.5, 2.5], [-0.5, 0.5, 2.5]]]
    fx, fy = forward_gradient(x)
    assert fx.tolist() == [[[1.0, 2.0, 0.0], [3.0, 6.0, 0.0]]]
    assert fy.tolist() == [[[-1.0, 1.0, 5.0], [0.0, 0.0, 0.0]]]
    # The divergence is minus the adjoint of the forward gradient, <grad u, p> = -<u, div p>, for dual
    # fields that are zero where the forward differences are (as TV-L1's p stays).
    rng = torch.Generator().manual_seed(0)
    u, p1, p2 = (torch.randn(1, 7, 9, generator=rng, dtype=torch.float64) for _ in range(3))
    p1[..., -1] = 0
    p2[..., -1, :] = 0
    gx, gy = forward_gradient(u)
    assert torch.allclose((gx * p1 + gy * p2).sum(), -(u * divergence(p1, p2)).sum())


# -------------------------------------------------------------- whole flows


def test_one_warp_one_scale_equals_opencv(bikes_frames):
    a, b = gray_crop(bikes_frames[0], 96), gray_crop(bikes_frames[1], 96)
    p = TVL1Params(nscales=1, warps=1)
    assert epe(ours(a[None], b[None], p)[0], opencv_flow(a, b, p)).max() < 1e-3


def _opencv_self_diff(a, b, ref, rng):
    """Per pixel: how far OpenCV's own flow ``ref`` moves when its input changes by 1e-6 gray levels."""
    # Float input is scaled by 255 in OpenCV: this is a perturbation of 1e-6 gray levels.
    noisy = (a / np.float32(255) + rng.standard_normal(a.shape).astype(np.float32) * np.float32(1e-6 / 255))
    return epe(opencv_flow(noisy.astype(np.float32), (b / np.float32(255)).astype(np.float32)), ref)


def _fidelity(frames, size, step, compile=False):
    """Per pair: our endpoint difference to OpenCV, and OpenCV's own difference under 1e-6 gray-level noise."""
    rng = np.random.default_rng(0)
    pairs = [(gray_crop(frames[i], size), gray_crop(frames[i + 1], size)) for i in range(0, len(frames) - 1, step)]
    got = ours(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), compile=compile)
    rows = []
    for (a, b), flow in zip(pairs, got):
        ref = opencv_flow(a, b)
        rows.append((epe(flow, ref), _opencv_self_diff(a, b, ref, rng)))
    return rows


def _check_fidelity(rows):
    """Mean endpoint difference <= 0.05 px and 99th percentile <= 0.5 px where the problem is well posed.

    TV-L1 with warping is chaotic on some pairs: OpenCV itself moves by up to
    ~0.2 px mean when its input changes by 1e-6 gray levels, so no float
    implementation that is not bit-identical can agree better than that. The
    thresholds therefore apply, pooled, to the pairs on which OpenCV's own
    spread is within them; on every pair our difference must stay within
    twice OpenCV's own spread plus the thresholds.
    """
    stable = [d for d, s in rows if s.mean() <= 0.05 and np.percentile(s, 99) <= 0.5]
    assert len(stable) >= len(rows) // 2, "too few well-posed pairs to test"
    pooled = np.concatenate([d.ravel() for d in stable])
    assert pooled.mean() <= 0.05, pooled.mean()
    assert np.percentile(pooled, 99) <= 0.5, np.percentile(pooled, 99)
    for d, s in rows:
        assert d.mean() <= 0.05 + 2 * s.mean(), (d.mean(), s.mean())
        assert np.percentile(d, 99) <= 0.5 + 2 * np.percentile(s, 99)


@pytest.mark.parametrize("source, step", [("bikes_frames", 20), ("demo_frames", 10)])
def test_flow_matches_opencv_on_real_frames(request, source, step):
    _check_fidelity(_fidelity(request.getfixturevalue(source), 96, step))


def _smooth_field(h, w, amplitude, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = np.zeros((h, w, 2), np.float32)
    for c in range(2):
        for _ in range(3):
            ky, kx, ph = rng.uniform(0.5, 2.0) * 2 * np.pi / h, rng.uniform(0.5, 2.0) * 2 * np.pi / w, rng.uniform(0, 6)
            f[..., c] += np.sin(ky * y + kx * x + ph).astype(np.float32)
    return f * (amplitude / np.abs(f).max())


@pytest.mark.parametrize("amplitude", [1.5, 4.0])
def test_known_flow_error_no_worse_than_opencv(bikes_frames, amplitude):
    """Warp a real frame by a smooth known field: our error vs the truth is within 5% of OpenCV's."""
    ours_err, cv_err = [], []
    for k, i in enumerate((0, 100, 200)):
        img = gray_crop(bikes_frames[i], 112).astype(np.float32)
        v = _smooth_field(112, 112, amplitude, seed=k)
        grid_x = np.arange(112, dtype=np.float32)[None, :] + v[..., 0]
        grid_y = np.arange(112, dtype=np.float32)[:, None] + v[..., 1]
        warped = cv2.remap(img, grid_x, grid_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        first = np.clip(np.rint(warped), 0, 255).astype(np.uint8)  # I1(x) = I0(x + v): flow first -> second is v
        second = img.astype(np.uint8)
        inner = (slice(8, -8), slice(8, -8))  # away from the border, where the truth leaves the image
        ours_err.append(epe(ours(first[None], second[None])[0], v)[inner].mean())
        cv_err.append(epe(opencv_flow(first, second), v)[inner].mean())
    assert np.mean(ours_err) <= 1.05 * np.mean(cv_err), (ours_err, cv_err)
    assert np.mean(ours_err) < 0.25 * amplitude  # and the flow is actually recovered


def test_batch_equals_pairs_one_by_one(bikes_frames):
    a = np.stack([gray_crop(bikes_frames[i], 64) for i in (0, 50, 100)])
    b = np.stack([gray_crop(bikes_frames[i + 1], 64) for i in (0, 50, 100)])
    batched = ours(a, b)
    single = np.stack([ours(a[i:i + 1], b[i:i + 1])[0] for i in range(3)])
    assert np.abs(batched - single).max() < 1e-4


def test_input_validation():
    with pytest.raises(ValueError, match="same shape"):
        tvl1(torch.zeros(1, 32, 32), torch.zeros(1, 32, 31))
    with pytest.raises(ValueError, match="median_filtering"):
        tvl1(torch.zeros(1, 32, 32), torch.zeros(1, 32, 32), TVL1Params(median_filtering=3))


@pytest.mark.slow
def test_compiled_equals_eager_224(bikes_frames):
    """Compiled kernels round differently (fused multiply-adds, another summation order): within 0.05 px of
    eager where the pair is well posed, and within twice OpenCV's own spread plus that on a chaotic pair
    (pair 0: OpenCV itself moves by 0.39 px mean under 1e-6 gray-level noise)."""
    rng = np.random.default_rng(0)
    a = np.stack([gray_crop(bikes_frames[i], 224) for i in (0, 120)])
    b = np.stack([gray_crop(bikes_frames[i + 1], 224) for i in (0, 120)])
    eager = ours(a, b)
    compiled = ours(a, b, compile=True)
    spreads = [_opencv_self_diff(a[k], b[k], opencv_flow(a[k], b[k]), rng).mean() for k in range(2)]
    for k, spread in enumerate(spreads):
        assert epe(eager[k], compiled[k]).mean() <= 0.05 + 2 * spread, (k, spread)
    assert spreads[1] < 1e-3  # pair 120 is well posed: the strict bound applies


@pytest.mark.slow
def test_fidelity_at_224(bikes_frames):
    _check_fidelity(_fidelity(bikes_frames, 224, 20))


@pytest.mark.slow
def test_compiled_flow_matches_opencv_on_real_frames(bikes_frames):
    """The compiled kernels (what compile: auto runs on long videos) meet the same tolerances as eager."""
    _check_fidelity(_fidelity(bikes_frames, 96, 20, compile=True))
