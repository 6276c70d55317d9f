"""Detection mAP speed on a THUMOS14-sized set: pipeline/evaluate.py vs ActivityNet's per-detection loop, same run.

    python bench/evaluate.py [--videos 200] [--classes 20] [--detections 10000] [--repeats 3]

Synthetic set of THUMOS14's shape: 200 test videos, 20 classes, about 17
ground-truth segments per video, Ambiguous segments, and detections half near
a ground truth (so that matches compete) and half anywhere; tIoU 0.1:0.1:0.7.
- ours: ``pipeline.core.metrics.evaluate`` (vectorized matching, one step per rank
  inside a (video, class));
- loop: ActivityNet's ``compute_average_precision_detection`` as transcribed
  in tests/activitynet_eval.py (a Python loop over detections and
  thresholds), with THUMOS14's Ambiguous rule, per class.
Both start from the same inputs (the results dict, the annotation table)
and end with the mAP per threshold.
Both give the mAP per threshold; the script checks they are identical and
prints the time ratio (best of the repeats).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from activitynet_eval import compute_average_precision_detection  # noqa: E402
from pipeline.core.annotation_io import Annotations, Segment  # noqa: E402
from pipeline.core.metrics import evaluate  # noqa: E402

TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def synthetic(n_videos: int, n_classes: int, n_det: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    videos = [f"video_test_{i:07d}" for i in range(n_videos)]
    classes = [f"Class{i:02d}" for i in range(n_classes)]
    gt, amb = [], []
    for v in videos:
        duration = rng.uniform(60, 400)
        labels = rng.choice(n_classes, size=rng.integers(1, 3), replace=False)
        for _ in range(rng.integers(5, 30)):
            s = rng.uniform(0, duration - 10)
            gt.append((v, classes[rng.choice(labels)], s, s + rng.uniform(1, 10)))
        for _ in range(rng.integers(0, 3)):
            s = rng.uniform(0, duration - 5)
            amb.append((v, s, s + rng.uniform(1, 5)))
    rows = []
    for _ in range(n_det):
        if rng.random() < 0.5:
            v, c, s, e = gt[rng.integers(len(gt))]
            s, e = s + rng.normal(0, 1.5), e + rng.normal(0, 1.5)
            s, e = min(s, e - 0.2), max(e, s + 0.2)
        else:
            v, c = videos[rng.integers(n_videos)], classes[rng.integers(n_classes)]
            s = rng.uniform(0, 390)
            e = s + rng.uniform(0.5, 12)
        rows.append((v, c, float(s), float(e), float(rng.random())))
    ann = Annotations(classes, [Segment(v, "test", c, s, e) for v, c, s, e in gt],
                      [Segment(v, "test", "Ambiguous", s, e) for v, s, e in amb],
                      videos={v: ("test", 400.0) for v in videos})
    results: dict[str, list[dict]] = {}
    for v, c, s, e, score in rows:
        results.setdefault(v, []).append({"label": c, "score": score, "segment": [s, e]})
    return ann, results, gt, amb, rows, classes


def loop_map(results: dict, ann, thresholds=TIOU) -> np.ndarray:
    """ActivityNet's evaluator from the same inputs as ours: results json and the annotation table."""
    gt = {c: [] for c in ann.classes}
    for s in ann.segments:
        gt[s.label].append((s.video, s.start_s, s.end_s))
    pred = {c: [] for c in ann.classes}
    for v, dets in results.items():
        for d in dets:
            pred[d["label"]].append((v, d["segment"][0], d["segment"][1], d["score"]))
    amb = [(s.video, s.start_s, s.end_s) for s in ann.ambiguous]
    aps = [compute_average_precision_detection(gt[c], pred[c], thresholds, amb) for c in ann.classes if gt[c]]
    return np.mean(aps, axis=0) * 100


def best_of(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--detections", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ann, results, gt, amb, rows, classes = synthetic(args.videos, args.classes, args.detections)
    t_ours, m = best_of(lambda: evaluate(results, ann, "test", TIOU), args.repeats)
    ours = np.array([m["map"][f"{t:g}"] for t in TIOU])
    t_loop, theirs = best_of(lambda: loop_map(results, ann), 1)
    same = np.allclose(ours, theirs, atol=1e-3)
    print(f"set: {args.videos} videos, {args.classes} classes, {len(gt)} ground truth, {len(amb)} Ambiguous, "
          f"{len(rows)} detections, tIoU {TIOU}")
    print(f"mAP ours: {np.round(ours, 3).tolist()}")
    print(f"mAP loop: {np.round(theirs, 3).tolist()}  identical: {same}")
    print(f"time ours {t_ours:.3f} s, loop {t_loop:.3f} s, ratio ours/loop {t_ours / t_loop:.4f} "
          f"({t_loop / t_ours:.0f}x faster)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
