"""TV-L1 pairs/s and I3D snippets/s by batch size and dtype, on whatever device exists.

    python bench/gpu.py [--device auto|cpu|cuda] [--batches 1,8,32] [--crop 224] [--repeats 2]

The two kernels that decide a real run's time, at the real presets' size:
- TV-L1 (models/tvl1.py) with OpenCV's default parameters on crop x crop frame
  pairs of a textured scene (float32: the only precision the stage offers),
  eager and, on a GPU, compiled (as ``flow.compile: auto`` runs there);
- I3D (models/i3d.py) on 16 x crop x crop snippets, one stream, float32 and
  bfloat16 autocast (float16 autocast too on CUDA), channels-last as the stage.
Prints one table; on CUDA also the peak GPU memory per row. Every figure is
from this run: on a 2-core CPU use small batches (the defaults), on a GPU
pass e.g. ``--batches 1,8,32,64``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.i3d import InceptionI3d  # noqa: E402
from models.tvl1 import tvl1  # noqa: E402
from models.tvl1_params import TVL1Params  # noqa: E402
from pipeline.costs import textured_pair  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """Best seconds of ``repeats`` calls after one warm-up, and peak GPU memory in GB (0 on CPU)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else 0.0
    return best, peak


def tvl1_rows(device, batches, crop, repeats):
    a, b = textured_pair(crop)
    for compile_ in ([False, True] if device.type == "cuda" else [False]):
        for n in batches:
            f0 = torch.tensor(a, dtype=torch.float32, device=device)[None].repeat(n, 1, 1)
            f1 = torch.tensor(b, dtype=torch.float32, device=device)[None].repeat(n, 1, 1)
            s, peak = timed(lambda: tvl1(f0, f1, TVL1Params(), compile=compile_), device, repeats)
            yield ("TV-L1 pairs/s", f"float32{' compiled' if compile_ else ''}", n, n / s, peak)


def i3d_rows(device, batches, crop, repeats):
    model = InceptionI3d(in_channels=3).eval().to(device, memory_format=torch.channels_last_3d)
    dtypes = {"float32": None, "bfloat16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["float16"] = torch.float16
    for name, dtype in dtypes.items():
        for n in batches:
            x = torch.randn(n, 3, 16, crop, crop, device=device).contiguous(memory_format=torch.channels_last_3d)

            def run():
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    model.features(x)

            s, peak = timed(run, device, repeats)
            yield ("I3D snippets/s (one stream)", name, n, n / s, peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    label = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{label}; torch {torch.__version__}; crop {args.crop}")
    print(f"{'kernel':<30}{'dtype':<18}{'batch':>6}{'per s':>10}{'peak GPU GB':>13}")
    for rows in (tvl1_rows(device, batches, args.crop, args.repeats),
                 i3d_rows(device, batches, args.crop, args.repeats)):
        for kernel, dtype, n, rate, peak in rows:
            print(f"{kernel:<30}{dtype:<18}{n:>6}{rate:>10.2f}{peak:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
