"""Fixed cost of a per-video job against the compute it wraps: decode, flow, features on a 2-second video.

    python bench/job_overhead.py [--repeats 3] [--compile]

A real H.264 video (2 s, 640x360, 25 fps, made with PyAV) goes through each
per-video stage the way a Snakemake job runs it, as a new process:
- cold: ``python -m pipeline.<stage>`` (what every job paid before warm starts);
- warm: ``python -m pipeline.warm <stage>`` (forked from a per-node process that imported torch once;
  the first warm job also starts that process and is reported apart).
For each, the wall time of the job, and from the stage's own ``timing`` record: startup (process start
and imports), setup (weights, TV-L1 engine) and compute. Fixed = wall - compute. Decode runs at the
real presets' size (short side 256, crop 224); flow with a light TV-L1 setting (its fixed cost does not
depend on the iterations, and OpenCV's defaults would make the compute dominate this 2-second video);
features with the real Kinetics-400 RGB weights and random flow weights.
``--compile`` also times a flow job with ``torch.compile`` on, first with an empty compile cache, then
with the cache the first job left (a fresh folder as flow.cache_dir, where a real run uses the node cache).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.demo_data import write_video  # noqa: E402
from pipeline.core.settings import DecodeSettings, FlowRuntime, FlowSettings  # noqa: E402
from models.tvl1_params import TVL1Params  # noqa: E402

PY = sys.executable
LIGHT_TVL1 = TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=5)


def make_video(path: Path, seconds: float = 2.0, size=(640, 360), fps: int = 25) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))
    frames = [np.roll(base, 3 * i, axis=1) for i in range(int(seconds * fps))]
    write_video(path, frames, fps)


def job(cmd: list[str], meta: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    timing = json.loads(meta.read_text())["timing"]
    return {"wall": wall, **timing, "fixed": wall - timing["compute_s"]}


def stage_commands(tmp: Path, video: Path, runtime: FlowRuntime) -> dict[str, tuple[list[str], Path]]:
    d = tmp / "decoded"
    d.mkdir(exist_ok=True)
    decode = DecodeSettings(short_side=256, crop=224)
    flow = FlowSettings(tvl1=LIGHT_TVL1)
    from dataclasses import asdict

    return {
        "decode": (["pipeline.decode", str(video), "--frames", str(d / "frames.npy"), "--meta", str(d / "meta.json"),
                    "--settings", json.dumps(asdict(decode)), "--no-progress"], d / "meta.json"),
        "flow": (["pipeline.flow", str(d / "frames.npy"), "--decode-meta", str(d / "meta.json"),
                  "--flow", str(tmp / "flow.npy"), "--meta", str(tmp / "flow.json"), "--settings",
                  json.dumps(asdict(flow)), "--runtime", json.dumps(asdict(runtime)), "--threads", "1",
                  "--no-progress"], tmp / "flow.json"),
        "features": (["pipeline.features", str(d / "frames.npy"), "--flow", str(tmp / "flow.npy"),
                      "--flow-meta", str(tmp / "flow.json"), "--out", str(tmp / "features.npy"),
                      "--provenance", str(tmp / "features.json"), "--threads", "1", "--no-progress"],
                     tmp / "features.json"),
    }


def run_cmd(args: list[str], warm: bool) -> list[str]:
    module, rest = args[0], args[1:]
    stage = module.split(".")[1]
    if warm and stage != "decode":  # decode imports no torch: it runs cold
        return [PY, "-m", "pipeline.warm", stage, *rest]
    return [PY, "-m", module, *rest]


def fmt(rows: list[dict]) -> str:
    m = {k: statistics.median(r[k] for r in rows) for k in ("wall", "startup_s", "setup_s", "compute_s", "fixed")}
    return (f"{m['wall']:7.2f} {m['startup_s']:9.2f} {m['setup_s']:7.2f} {m['compute_s']:9.2f} "
            f"{m['fixed']:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile with an empty and a warm cache")
    args = ap.parse_args()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "clip.mp4"
        make_video(video)
        cmds = stage_commands(tmp, video, FlowRuntime(compile=False, threads=1))
        job([PY, "-m", *cmds["decode"][0]], cmds["decode"][1], env)  # the later stages read its output
        # first warm job: starts the per-node worker (a run pays this once)
        first = job(run_cmd(cmds["flow"][0], True), cmds["flow"][1], env)
        print(f"2-second 640x360 video, crop 224; medians of {args.repeats} jobs, seconds")
        print(f"{'stage':<9}{'start':<6}{'wall':>7} {'startup':>9} {'setup':>7} {'compute':>9} {'fixed':>7}")
        for stage, (cmd, meta) in cmds.items():
            for warm in (False, True):
                if warm and stage == "decode":
                    continue
                rows = [job(run_cmd(cmd, warm), meta, env) for _ in range(args.repeats)]
                print(f"{stage:<9}{'warm' if warm else 'cold':<6}{fmt(rows)}")
        print(f"(the first warm job of a node also started the worker: {first['wall']:.2f} s wall)")
        if args.compile:
            cache = tmp / "cache"
            cmd, meta = stage_commands(tmp, video, FlowRuntime(compile=True, threads=1,
                                                               cache_dir=str(cache)))["flow"]
            for label in ("compile, empty cache", "compile, cache of the first job"):
                r = job(run_cmd(cmd, True), meta, env)
                flow_meta = json.loads(meta.read_text())
                print(f"flow {label:<32} wall {r['wall']:6.1f}  first batch (compile) "
                      f"{flow_meta['first_batch_s']:6.1f}")


if __name__ == "__main__":
    main()
