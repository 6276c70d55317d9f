"""I3D feature extraction speed: the features stage's configuration vs a plain fp32 eager baseline, same run.

    python bench/i3d.py [--snippets 16] [--size 224] [--batch 1 8 16]

Baseline: the same network (Kinetics-400 RGB weights; the flow stream with
random weights, same cost), fp32, eager, contiguous memory, under
torch.no_grad, one snippet at a time. The stage: inference mode, snippets
batched, channels-last 3D on the GPU with bf16 autocast, channels-last on
the CPU where oneDNN is faster with it. Prints snippets/s per stream and the
ratio stage/baseline. With CUDA, the batch size is swept on the GPU too.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.i3d import InceptionI3d  # noqa: E402
from pipeline.features import kinetics_rgb  # noqa: E402


def rate(model, x, batch, device, channels_last=False, inference=False, bf16=False, repeat=1) -> float:
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    ctx = torch.inference_mode if inference else torch.no_grad
    best = float("inf")
    for _ in range(repeat + 1):  # the first pass warms up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with ctx(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(x), batch):
                model.features(x[i:i + batch].to(device).contiguous(memory_format=fmt))
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snippets", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", nargs="+", type=int, default=[8])
    ap.add_argument("--gpu-batch", nargs="+", type=int, default=[8, 32, 64, 128])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    streams = {"rgb": (kinetics_rgb().eval(), 3), "flow": (InceptionI3d(400, 2).eval(), 2)}
    print(f"torch {torch.__version__}, {args.threads} CPU threads, {args.snippets} snippets of 16x{args.size}x{args.size}")
    for name, (model, c) in streams.items():
        x = torch.rand(args.snippets, c, 16, args.size, args.size) * 2 - 1
        base = rate(model, x, 1, "cpu")
        print(f"{name}: CPU baseline fp32 eager, batch 1: {base:.2f} snippets/s")
        for batch in args.batch:
            for cl in (False, True):
                r = rate(model, x, batch, "cpu", channels_last=cl, inference=True)
                print(f"  CPU inference mode, batch {batch}{', channels-last' if cl else ''}: {r:.2f} snippets/s"
                      f"  ratio {r / base:.2f}")
        if torch.cuda.is_available():
            xg = torch.rand(max(args.gpu_batch) * 4, c, 16, args.size, args.size) * 2 - 1
            gbase = rate(model, xg, 1, "cuda")
            print(f"  {torch.cuda.get_device_name()} baseline fp32 eager batch 1: {gbase:.1f} snippets/s")
            for batch in args.gpu_batch:
                r = rate(model, xg, batch, "cuda", channels_last=True, inference=True, bf16=True)
                print(f"  GPU bf16 channels-last batch {batch}: {r:.1f} snippets/s  ratio {r / gbase:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
