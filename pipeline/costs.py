"""costs: what each stage cost in this run, and what THUMOS14 and ActivityNet 1.2 would cost here.

Reads the Snakemake ``benchmark:`` records of the decode, flow, features,
train and localize jobs (wall seconds, peak RSS), the decode metas (minutes of
video each job covered) and the device each job ran on, and writes
``costs.json``:
- ``stages``: per stage, jobs, job seconds, minutes of video, seconds per
  minute of video (train: per 1000 iterations), peak RSS, devices;
- ``projection``: those measured rates applied to the full THUMOS14 and
  ActivityNet 1.2 workloads at their presets' settings, on the machine that
  ran this. The per-video rates are scaled by the work per frame where the
  run's settings differ from the preset's: flow and features by crop area,
  flow also by TV-L1's iteration bound (scales x warps x outer x inner
  iterations, pyramid-weighted); training by batch x sequence length. Decode
  depends on the source resolution, which this run cannot know: its rate is
  taken as measured. Job seconds are summed: with N jobs at once the wall
  time is about the sum / N.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from pipeline.core.io import atomic_write_json

# Full workloads. Video minutes: the W-TALC duration.npy of each set (THUMOS14 lists 412 of the
# 413 videos; ActivityNet 1.2 from data/activitynet12).
WORKLOADS = {
    "thumos14": {"videos": 413, "minutes": 1462.6, "test_videos": 212, "classes": 20},
    "activitynet12": {"videos": 7202, "minutes": 13864.1, "test_videos": 2383, "classes": 100},
}
VIDEO_STAGES = ("decode", "flow", "features")


def read_benchmark(path: str | Path) -> dict:
    """One Snakemake benchmark record: wall seconds and peak RSS in MB (nan where Snakemake wrote NA)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: empty benchmark file")

    def num(key):
        try:
            return float(rows[-1].get(key, "nan"))
        except ValueError:
            return math.nan

    return {"s": num("s"), "max_rss_mb": num("max_rss")}


def textured_pair(size: int, seed: int = 0):
    """Two grayscale frames of a smooth random texture, the second shifted by (1.3, 0.7) px."""
    import numpy as np

    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    lowpass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) * 400)
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * lowpass
    shift = np.exp(-2j * np.pi * (f[:, None] * 0.7 + f[None, :] * 1.3))

    def gray(spec):
        x = np.fft.ifft2(spec).real
        return (x - x.min()) / (x.max() - x.min()) * 200 + 20

    return gray(spectrum), gray(spectrum * shift)


def flow_time_ratio(run_tvl1: dict, run_crop: int, target_tvl1: dict, target_crop: int, pairs: int = 2) -> float:
    """How much longer a frame pair takes at the target's TV-L1 settings and crop than at the run's.

    Measured here, eager, on a textured pair: TV-L1 stops early (epsilon), so its iteration bound
    overstates the work by an order of magnitude and cannot stand in for a measurement.
    """
    import time

    import torch

    from models.tvl1 import tvl1
    from models.tvl1_params import TVL1Params

    def seconds(p: dict, crop: int) -> float:
        a, b = textured_pair(crop)
        f0 = torch.tensor(a, dtype=torch.float32)[None].repeat(pairs, 1, 1)
        f1 = torch.tensor(b, dtype=torch.float32)[None].repeat(pairs, 1, 1)
        t0 = time.perf_counter()
        tvl1(f0, f1, TVL1Params(**p))
        return time.perf_counter() - t0

    if run_tvl1 == target_tvl1:
        return (target_crop / run_crop) ** 2
    return seconds(target_tvl1, target_crop) / seconds(run_tvl1, run_crop)


def train_step_s(target: dict, n_classes: int, probe_batch: int = 2) -> float:
    """Seconds of one training iteration at the target's model, batch and sequence length, measured here
    with the real step (pipeline.compute.train_step.step_seconds). A demo run's own iterations are too small to scale
    from (their time is mostly fixed cost), so the step is timed at a batch of ``probe_batch`` and scaled
    linearly in the batch, which keeps the probe to seconds on a CPU."""
    from pipeline.core.settings import TrainSettings
    from pipeline.compute.train_step import step_seconds

    b = min(probe_batch, target["batch_size"])
    return step_seconds(TrainSettings.from_dict(target["train"]), n_classes, b, target["seqlen"]) * target["batch_size"] / b


def stage_rows(records: dict[str, list[dict]]) -> dict[str, dict]:
    """Per stage: jobs, seconds, minutes of video, seconds per minute, peak RSS, devices.

    ``records[stage]`` holds one dict per job: ``s``, ``max_rss_mb``, ``minutes`` (video covered),
    ``device`` (or None), and for train ``iterations``.
    """
    out = {}
    for stage, recs in records.items():
        if not recs:
            continue
        seconds = sum(r["s"] for r in recs)
        minutes = sum(r.get("minutes", 0.0) for r in recs)
        rss = [r["max_rss_mb"] for r in recs if math.isfinite(r["max_rss_mb"])]
        row = {"jobs": len(recs), "seconds": seconds, "video_minutes": minutes,
               "s_per_video_minute": seconds / minutes if minutes > 0 else math.nan,
               "mean_job_s": seconds / len(recs), "peak_rss_mb": max(rss) if rss else math.nan,
               "devices": sorted({r["device"] for r in recs if r.get("device")})}
        timed = [r for r in recs if r.get("compute_s") is not None]
        if timed and minutes > 0:
            compute = sum(r["compute_s"] for r in timed)
            # everything a job pays besides its compute: process start, imports, weights, writing
            row["fixed_s_per_job"] = max(0.0, sum(r["s"] for r in timed) - compute) / len(timed)
            row["compute_s_per_video_minute"] = compute / sum(r["minutes"] for r in timed)
        if stage == "train":
            iterations = sum(r["iterations"] for r in recs)
            row["s_per_1000_iterations"] = 1000 * seconds / iterations if iterations else math.nan
        out[stage] = row
    return out


def project(stages: dict[str, dict], run: dict, targets: dict[str, dict]) -> dict[str, dict]:
    """Job seconds of each stage for each target workload, from this run's measured rates.

    ``run`` carries ``crop`` and ``test_videos``; each target ``crop``, ``tvl1`` (dict), ``batch_size``,
    ``seqlen`` (max_seqlen: the real datasets' videos fill it), ``train`` (its TrainSettings); targets also
    ``iterations``, ``experiments``, the workload's size, ``flow_ratio`` (flow_time_ratio) and
    ``train_step_s`` (train_step_s), both measured here.
    """
    out = {}
    for name, t in targets.items():
        crop = (t["crop"] / run["crop"]) ** 2
        scale = {"decode": 1.0, "features": crop, "flow": t.get("flow_ratio", crop)}
        row = {}
        for stage in VIDEO_STAGES:
            st = stages.get(stage)
            if st is None:
                continue
            if "fixed_s_per_job" in st:  # short demo videos: the fixed cost must not be scaled by minutes
                row[stage] = (st["fixed_s_per_job"] * t["videos"]
                              + st["compute_s_per_video_minute"] * scale[stage] * t["minutes"])
            elif math.isfinite(st["s_per_video_minute"]):
                row[stage] = st["s_per_video_minute"] * scale[stage] * t["minutes"]
        if "train" in stages and "train_step_s" in t:
            row["train"] = t["train_step_s"] * t["iterations"] * t["experiments"]
        if "localize" in stages and run.get("test_videos"):
            # per test video: a localize job is mostly loading features and the model
            row["localize"] = (stages["localize"]["mean_job_s"] / run["test_videos"] * t["test_videos"]
                               * t["experiments"])
        row["total"] = sum(row.values())
        out[name] = {"seconds": row, "videos": t["videos"], "minutes": t["minutes"]}
    return out


def _minutes(meta: dict) -> float:
    return meta.get("kept_duration_s", 0.0) / 60


def collect(bench_files: list[str], decode_metas: list[str], flow_metas: list[str], provenance: list[str],
            experiments: dict[str, dict], test_videos: set[str]) -> dict[str, list[dict]]:
    """This run's benchmark records (``<stage>/<video or experiment>.tsv``), each with the minutes of
    video and the device of its job."""
    metas = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in decode_metas}
    stage_meta = {"decode": metas,
                  "flow": {Path(p).parent.name: json.loads(Path(p).read_text()) for p in flow_metas},
                  "features": {Path(p).stem: json.loads(Path(p).read_text()) for p in provenance}}
    test_minutes = sum(_minutes(m) for v, m in metas.items() if v in test_videos)
    records: dict[str, list[dict]] = {s: [] for s in (*VIDEO_STAGES, "train", "localize")}
    for path in map(Path, bench_files):
        stage, key = path.parent.name, path.stem
        if stage in VIDEO_STAGES:
            meta = stage_meta[stage].get(key, {})
            timing = meta.get("timing") or {}
            extra = {"minutes": _minutes(metas.get(key, {})), "device": meta.get("device"),
                     "compute_s": timing.get("compute_s")}
            if timing.get("peak_rss_mb") is not None:  # the stage's own: a warm job's is not Snakemake's to see
                extra["max_rss_mb"] = timing["peak_rss_mb"]
        elif stage == "train":
            extra = {"iterations": experiments[key]["iterations"]}
        elif stage == "localize":
            extra = {"minutes": test_minutes}
        else:
            raise ValueError(f"{path}: not a benchmark record of a known stage")
        records[stage].append({**read_benchmark(path), **extra})  # extra's peak RSS wins
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("benchmarks", nargs="+", help="Snakemake benchmark records <stage>/<video or experiment>.tsv")
    ap.add_argument("--decode-metas", nargs="+", required=True)
    ap.add_argument("--flow-metas", nargs="*", default=[])
    ap.add_argument("--provenance", nargs="*", default=[], help="features/<video>.json")
    ap.add_argument("--test-videos", default="", help="comma-separated test videos (localize's minutes)")
    ap.add_argument("--settings", required=True, help="JSON: run, experiments, targets")
    ap.add_argument("--out", required=True, help="costs.json")
    args = ap.parse_args(argv)
    settings = json.loads(args.settings)
    test_videos = set(filter(None, args.test_videos.split(",")))
    records = collect(args.benchmarks, args.decode_metas, args.flow_metas, args.provenance, settings["experiments"],
                      test_videos)
    stages = stage_rows(records)
    run = {**settings["run"], "test_videos": len(test_videos)}
    targets = {n: {**WORKLOADS[n], **t} for n, t in settings["targets"].items()}
    if "flow" in stages:
        ratios: dict[str, float] = {}
        for t in targets.values():
            key = json.dumps([t["tvl1"], t["crop"]], sort_keys=True)
            if key not in ratios:
                ratios[key] = flow_time_ratio(run["tvl1"], run["crop"], t["tvl1"], t["crop"])
            t["flow_ratio"] = ratios[key]
    if "train" in stages:
        for n, t in targets.items():
            t["train_step_s"] = train_step_s(t, WORKLOADS[n]["classes"])
    atomic_write_json(args.out, {"stages": stages, "run": run, "projection": project(stages, run, targets)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
