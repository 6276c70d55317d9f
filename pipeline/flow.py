"""flow: decoded snippets -> TV-L1 optical flow between consecutive frames, quantized to uint8.

Output per video, ``flow.npy``: uint8 (n_blocks, stride, H, W, 2), the block
layout of decode's frames.npy, channels (x, y). Frame t of the video holds
the flow from frame t to t+1; the last frame, which has no successor (decode
drops the tail), repeats the flow before it, so every snippet has as many
flow fields as frames. ``meta.json`` carries decode's sampling forward, so
features and what reads its provenance see one record of how snippets were made.

Quantization: flow is clipped to [-bound, bound] (20 px) and mapped linearly
onto 0..255, ``q = floor(255 * (f + bound) / (2 * bound))`` by default
(DeepMind's and MediaPipe's truncation; zero flow -> 127) or with ``round``
(denseflow's; zero flow -> 128); pipeline/core/flow_files.py holds the format.

Backends: ``torch`` (models/tvl1.py, batched over frame pairs, on the GPU
when there is one) and ``opencv`` (``cv2.optflow.DualTVL1OpticalFlow``, the
reference). Memory is bounded by one batch of frame pairs, whatever the
video's length. A video decode skipped gets an empty flow file and is
recorded as skipped again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

import models.tvl1 as tvl1_module
from models.tvl1 import TVL1Params, opencv_tvl1, pyramid_sizes, rgb_to_gray, tvl1
from pipeline.core.flow_files import DECODE_FIELDS, quantize
from pipeline.core.io import NpyAppender, NpyRows, atomic_path, atomic_write_json
from pipeline.core.jobclock import Stopwatch, peak_rss_mb, process_age_s
from pipeline.core.nodelocal import private_dir
from pipeline.core.progress import progress_bar
from pipeline.compute.device import torch_device
from pipeline.core.settings import FlowRuntime, FlowSettings, from_dict

BACKENDS = ("torch", "opencv")


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) -> uint8 gray, bit-exact with ``cv2.cvtColor(RGB2GRAY)``."""
    return rgb_to_gray(torch.from_numpy(np.array(rgb))).numpy()  # a writable copy of the memory-mapped frames


# When torch.compile pays on a CPU. `python bench/tvl1.py` measures these on the machine it runs on and
# prints them; these come from a 2-core Intel Xeon (family 6 model 207, AVX-512), 2 threads, at 224x224
# and 340x256 with OpenCV's parameters, two runs: eager 3.5e-9 to 4.6e-9 s per unit, compiled 0.66 to
# 0.73 of eager, compile 68-74 s cold and 12-23 s warm (the costlier compile kept). Eager time grows
# with the pixels times the iteration budget of every pyramid level; compiled kernels take a fixed
# fraction of it; the compile costs a fixed time, less when the node's compile cache already holds the
# kernels (Dynamo still traces).
EAGER_S_PER_UNIT = 4.0e-9  # eager seconds per pixel-iteration of the budget (warps x outer x inner)
COMPILED_FRACTION = 0.70  # compiled time / eager time
COMPILE_S = {"warm": 23.0, "cold": 74.0}


def iteration_units(n_pairs: int, h: int, w: int, p: TVL1Params) -> float:
    """Pixels times the iteration budget over the pyramid, for ``n_pairs`` pairs of (h, w) frames."""
    pixels = sum(ph * pw for ph, pw in pyramid_sizes(h, w, p.nscales, p.scale_step))
    return float(n_pairs) * pixels * p.warps * p.outer_iterations * p.inner_iterations


def compile_pays(n_pairs: int, h: int, w: int, p: TVL1Params, cache: str) -> tuple[bool, str]:
    """Whether compiling saves more than it costs for this video on the CPU; the reason in words."""
    eager_s = iteration_units(n_pairs, h, w, p) * EAGER_S_PER_UNIT
    saved_s = eager_s * (1.0 - COMPILED_FRACTION)
    pays = saved_s > COMPILE_S[cache]
    return pays, (f"{n_pairs} pairs of {w}x{h}: compiling would save about {saved_s:.0f} s of {eager_s:.0f} s "
                  f"and cost about {COMPILE_S[cache]:.0f} s ({cache} compile cache)")


def compile_cache_dir(runtime: FlowRuntime) -> Path:
    """The compiled kernels' folder: the setting, else this user's private folder on the node.

    Under /tmp rather than the job's TMPDIR: a scheduler wipes the job's folder at the job's end, and
    the kernels are worth keeping for every later run of the user on that node (docs/cluster.md).
    """
    if runtime.cache_dir:
        path = Path(runtime.cache_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return private_dir("torch-compile", base="/tmp")


def _warm_marker(cache: Path) -> Path:
    """A file that says this torch has compiled this TV-L1 code into ``cache`` before."""
    code = hashlib.sha1(Path(tvl1_module.__file__).read_bytes()).hexdigest()[:12]
    return cache / f"tvl1-{torch.__version__}-{code}.compiled"


class _TorchFlow:
    def __init__(self, settings: FlowSettings, runtime: FlowRuntime, n_pairs: int, size: tuple[int, int]):
        self.device = torch_device(runtime.device, runtime.threads, "flow")
        self.params = settings.tvl1
        self.compile = runtime.compile
        self.compile_record: dict = {"asked": runtime.compile}
        if self.compile is not False:
            cache = compile_cache_dir(runtime)
            self._marker = _warm_marker(cache)
            self.compile_record.update(cache_dir=str(cache), cache="warm" if self._marker.exists() else "cold")
        if self.compile == "auto":
            if self.device.type == "cuda":
                self.compile, why = True, "on a GPU compiling always pays"
            else:
                self.compile, why = compile_pays(n_pairs, *size, self.params, self.compile_record["cache"])
            self.compile_record["why"] = why
        self.compile_record["compiled"] = self.compile
        if self.compile:
            # Inductor's and Triton's caches in the node's private folder, shared by this user's runs there;
            # compile workers limited to the job's threads, so that a cold compile stays in the job's cores
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
            os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(max(runtime.threads, 1)))

    def __call__(self, gray0: np.ndarray, gray1: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(gray0).to(self.device)
        b = torch.from_numpy(gray1).to(self.device)
        return tvl1(a, b, self.params, compile=self.compile).cpu().numpy()

    def finish(self) -> dict:
        """What compiling did (cache hits and misses), with the decision; marks the cache warm."""
        if self.compile:
            from torch._dynamo.utils import counters

            self.compile_record.update(cache_hits=counters["inductor"]["fxgraph_cache_hit"],
                                       cache_misses=counters["inductor"]["fxgraph_cache_miss"])
            self._marker.touch()
        return self.compile_record


class _OpenCVFlow:
    def __init__(self, settings: FlowSettings, runtime: FlowRuntime):
        import cv2

        if runtime.threads:
            cv2.setNumThreads(runtime.threads)
        self.device = "cpu"
        self.tvl1 = opencv_tvl1(settings.tvl1)

    def __call__(self, gray0: np.ndarray, gray1: np.ndarray) -> np.ndarray:
        return np.stack([self.tvl1.calc(a, b, None) for a, b in zip(gray0, gray1)])

    def finish(self) -> dict:
        return {"compiled": False}


def flow_engine(settings: FlowSettings, runtime: FlowRuntime, n_pairs: int = 0, size: tuple[int, int] = (0, 0)):
    """A callable (B,H,W) uint8 gray x2 -> (B,H,W,2) float32 flow, for the configured backend."""
    if settings.backend == "torch":
        return _TorchFlow(settings, runtime, n_pairs, size)
    if settings.backend == "opencv":
        return _OpenCVFlow(settings, runtime)
    raise ValueError(f"unknown flow backend {settings.backend!r}; choose one of {BACKENDS}")


# ---------------------------------------------------------------- the stage


def compute_flow(frames_path: str | Path, out_path: str | Path, settings: FlowSettings,
                 runtime: FlowRuntime = FlowRuntime(), progress: bool = False) -> dict:
    """Flow of every consecutive frame pair of one decoded video, written as quantized snippets."""
    flat = NpyRows(frames_path, lead_dims=2)  # single frames, read a batch at a time
    n_blocks, block, h, w, _ = flat.full_shape
    n_frames = len(flat)
    setup = Stopwatch()
    engine = flow_engine(settings, runtime, n_frames - 1, (h, w)) if n_frames else None
    setup_s = setup()
    first_batch_s = None
    bar = progress_bar(total=max(n_frames - 1, 0), desc=f"flow {Path(frames_path).parent.name}", unit="pair") \
        if progress and n_frames else None
    start = time.perf_counter()
    pending = np.empty((0, h, w, 2), np.uint8)  # quantized flows not yet written as whole snippets
    with atomic_path(out_path) as tmp:
        writer = NpyAppender(tmp, (block, h, w, 2))
        try:
            gray_prev = None
            for t0 in range(0, n_frames - 1, runtime.batch_size):
                t1 = min(t0 + runtime.batch_size, n_frames - 1)
                gray = to_gray(flat[t0 + 1:t1 + 1])
                first = gray_prev if gray_prev is not None else to_gray(flat[t0:t0 + 1])
                seq = np.concatenate([first[-1:], gray])
                flow = engine(seq[:-1], seq[1:])
                if first_batch_s is None:  # with compile on, the warm-up is paid here
                    first_batch_s = round(time.perf_counter() - start, 3)
                gray_prev = gray
                q = quantize(flow, settings.bound, settings.quantize)
                if t1 == n_frames - 1:  # the last frame has no successor: repeat the last flow
                    q = np.concatenate([q, q[-1:]])
                pending = np.concatenate([pending, q])
                whole = len(pending) // block
                if whole:
                    writer.write(pending[:whole * block].reshape(whole, block, h, w, 2))
                    pending = pending[whole * block:]
                if bar is not None:
                    bar.update(t1 - t0)
        finally:
            writer.close()
            if bar is not None:
                bar.close()
        assert writer.count == n_blocks and len(pending) == 0
    seconds = time.perf_counter() - start
    return {"n_blocks": n_blocks, "n_pairs": max(n_frames - 1, 0), "seconds": round(seconds, 3),
            "setup_s": setup_s, "first_batch_s": first_batch_s,
            "compile": engine.finish() if engine else {"compiled": False},
            "pairs_per_s": round((n_frames - 1) / seconds, 3) if n_frames > 1 else None,
            "device": str(engine.device) if engine else None, "settings": asdict(settings),
            "runtime": asdict(runtime)}


def run(frames: str, decode_meta: str, flow_out: str, meta_out: str, settings: FlowSettings,
        runtime: FlowRuntime, progress: bool = True, startup_s: float | None = None) -> dict:
    status = json.loads(Path(decode_meta).read_text())
    meta = {"video": status["video"], "status": status["status"],
            **{k: status.get(k) for k in DECODE_FIELDS}}
    meta.update(compute_flow(frames, flow_out, settings, runtime, progress=progress))
    meta["timing"] = {"startup_s": startup_s, "setup_s": meta["setup_s"], "compute_s": meta["seconds"],
                      "peak_rss_mb": peak_rss_mb()}
    if status["status"] != "ok":
        meta["reason"] = status.get("reason", "")
    atomic_write_json(meta_out, meta)
    return meta


def main(argv=None) -> int:
    startup_s = process_age_s()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("frames", help="decoded frames.npy")
    ap.add_argument("--decode-meta", required=True)
    ap.add_argument("--flow", required=True, help="output flow.npy")
    ap.add_argument("--meta", required=True, help="output meta.json")
    ap.add_argument("--settings", default="{}", help="FlowSettings as JSON")
    ap.add_argument("--runtime", default="{}", help="FlowRuntime as JSON")
    ap.add_argument("--threads", type=int, help="CPU threads (overrides the runtime's)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    runtime = from_dict(FlowRuntime, json.loads(args.runtime), "flow runtime")
    if args.threads:
        runtime = replace(runtime, threads=args.threads)
    run(args.frames, args.decode_meta, args.flow, args.meta, FlowSettings.from_dict(json.loads(args.settings)),
        runtime, progress=not args.no_progress, startup_s=startup_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
