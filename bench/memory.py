"""Peak memory of decode, flow and features is bounded by a chunk, not by the video's length.

    python bench/memory.py [--minutes 1,10] [--width 640 --height 360 --fps 30]

Makes real H.264 videos with PyAV (a moving textured scene, 640x360 at 30 fps)
of each length, runs each per-video stage on them as the workflow does (a new
process, short side 256, crop 224, 25 fps; flow with a light TV-L1 setting,
whose memory does not depend on the iterations; features with the real
Kinetics-400 RGB weights and random flow weights), and prints each stage's
peak RSS (the process's own ru_maxrss, from wait4) per length, and the ratio
of the longest to the shortest (the bound asks <= 1.10).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.demo_data import write_video  # noqa: E402
from pipeline.core.settings import DecodeSettings, FlowRuntime, FlowSettings  # noqa: E402
from models.tvl1_params import TVL1Params  # noqa: E402


def frames(n: int, width: int, height: int):
    """A scrolling texture with a moving bright square: cheap to make, real motion for TV-L1."""
    rng = np.random.default_rng(0)
    tex = np.kron(rng.integers(0, 255, (height // 8, 2 * width // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    for i in range(n):
        f = np.ascontiguousarray(tex[:, (2 * i) % width:(2 * i) % width + width])
        x = (5 * i) % (width - 40)
        f[height // 2 - 20:height // 2 + 20, x:x + 40] = 255
        yield f


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TQDM_DISABLE": "1", "VIDLOC_WARM_START": "0"})
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="1,10")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=30)
    args = ap.parse_args()
    py = sys.executable
    decode = json.dumps(asdict(DecodeSettings(short_side=256, crop=224)))
    flow = json.dumps(asdict(FlowSettings(tvl1=TVL1Params(nscales=1, warps=1, outer_iterations=1,
                                                          inner_iterations=2))))
    runtime = json.dumps(asdict(FlowRuntime(compile=False, threads=2)))
    results: dict[str, dict[float, float]] = {"decode": {}, "flow": {}, "features": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for minutes in (float(m) for m in args.minutes.split(",")):
            d = tmp / f"{minutes:g}min"
            d.mkdir()
            video = d / "video.mp4"
            n = int(minutes * 60 * args.fps)
            write_video(video, frames(n, args.width, args.height), args.fps)
            stages = {
                "decode": [py, "-m", "pipeline.decode", str(video), "--frames", str(d / "frames.npy"),
                           "--meta", str(d / "meta.json"), "--settings", decode, "--no-progress"],
                "flow": [py, "-m", "pipeline.flow", str(d / "frames.npy"), "--decode-meta", str(d / "meta.json"),
                         "--flow", str(d / "flow.npy"), "--meta", str(d / "flow.json"), "--settings", flow,
                         "--runtime", runtime, "--no-progress"],
                "features": [py, "-m", "pipeline.features", str(d / "frames.npy"), "--flow", str(d / "flow.npy"),
                             "--flow-meta", str(d / "flow.json"), "--out", str(d / "f.npy"),
                             "--provenance", str(d / "f.json"), "--threads", "2", "--no-progress"],
            }
            for stage, cmd in stages.items():
                rss, secs = peak_rss_mb(cmd)
                results[stage][minutes] = rss
                size = sum(p.stat().st_size for p in d.glob("*.npy")) / 1e9
                print(f"{minutes:g} min ({n} frames): {stage:<9} peak RSS {rss:7.0f} MB  ({secs:6.1f} s; "
                      f"outputs so far {size:.2f} GB)", flush=True)
    lengths = sorted(results["decode"])
    print(f"\n{'stage':<10}" + "".join(f"{f'{m:g} min MB':>13}" for m in lengths) + f"{'ratio':>8}")
    for stage, r in results.items():
        print(f"{stage:<10}" + "".join(f"{r[m]:13.0f}" for m in lengths) + f"{r[lengths[-1]] / r[lengths[0]]:8.3f}")


if __name__ == "__main__":
    main()
