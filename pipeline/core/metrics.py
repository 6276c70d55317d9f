"""Detection mAP at tIoU thresholds, F1 at tIoU 0.5 and video-level classification mAP.

Two protocols (docs/evaluation.md compares them):

- ``activitynet`` (default): the rules of ActivityNet's
  ``Evaluation/eval_detection.py``. Segments in continuous seconds; detections
  of a class ranked by score; each is matched to the unmatched ground truth of
  its video and class with the highest tIoU, if that tIoU reaches the
  threshold, else it is a false positive; AP is the interpolated
  (all-point envelope) area under precision-recall; a class without
  detections scores 0. THUMOS14's Ambiguous segments as its toolkit treats
  them: a detection that matches no ground truth but overlaps an Ambiguous
  segment of its video is ignored (neither true nor false positive).
- ``d2net``: the reference code's ``getLocMAP``, for comparison with the
  paper. Both sides rounded to the snippet grid and compared as index sets;
  each detection takes the *first* unmatched ground truth (in annotation
  order) whose IoU reaches the threshold; detections overlapping an Ambiguous
  segment are dropped before matching. The reference's cascading-zero bug
  (one class without detections zeroes every later class) is not reproduced.

Matching is sequential only among detections of one (video, class), so it
runs as one vectorized step per rank: step r matches the r-th best detection
of every (video, class) at every threshold at once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.intervals import interval_iou

log = logging.getLogger(__name__)

PROTOCOLS = ("activitynet", "d2net")
F1_TIOU = 0.5


class EvaluationError(ValueError):
    pass


@dataclass
class Segments:
    """Columnar segments: video and class as integer indices, times in seconds, optional score."""
    video: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.video)

    def take(self, idx) -> "Segments":
        return Segments(self.video[idx], self.label[idx], self.start[idx], self.end[idx],
                        None if self.score is None else self.score[idx])


def segments(rows, videos: dict[str, int], classes: dict[str, int], scored: bool = False) -> Segments:
    """Segments from (video, label, start, end[, score]) rows; labels must be in ``classes``."""
    rows = list(rows)
    v = np.fromiter((videos[r[0]] for r in rows), np.int64, len(rows))
    c = np.fromiter((classes[r[1]] for r in rows), np.int64, len(rows))
    t = np.array([r[2:] for r in rows], np.float64).reshape(len(rows), 3 if scored else 2)
    return Segments(v, c, t[:, 0], t[:, 1], t[:, 2] if scored else None)


# ------------------------------------------------------------------ matching


def _group_tables(groups: np.ndarray, fill: float, *columns: np.ndarray):
    """Items grouped by key as padded (n_groups, largest group) tables, each group's items in input order.

    Returns the sorted distinct keys and one table per column, ``fill`` where a group has fewer items.
    """
    keys, inv = np.unique(groups, return_inverse=True)
    counts = np.bincount(inv, minlength=len(keys))
    order = np.argsort(inv, kind="stable")
    slot = np.arange(len(groups)) - np.repeat(np.cumsum(counts) - counts, counts)
    tables = []
    for col in columns:
        table = np.full((len(keys), counts.max()), fill)
        table[inv[order], slot] = col[order]
        tables.append(table)
    return keys, tables


def _lookup(keys: np.ndarray, x: np.ndarray):
    """Row of each ``x`` among the sorted ``keys``, and whether it is one of them."""
    pos = np.searchsorted(keys, x)
    return pos, (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == x)


def _ranks(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank of each item inside its group when items are taken in ``order``."""
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    by_group = np.lexsort((pos, groups))
    g = groups[by_group]
    first = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    starts = np.repeat(first, np.diff(np.r_[first, len(g)]))
    ranks = np.empty(len(groups), np.int64)
    ranks[by_group] = np.arange(len(g)) - starts
    return ranks


def match(det: Segments, gt: Segments, thresholds, rule: str = "best") -> np.ndarray:
    """(n_det, n_thr) bool: is each detection a true positive at each tIoU threshold.

    Detections are taken in decreasing score (ties: input order) within their
    (video, class). ``rule`` "best" takes the unmatched ground truth of highest
    tIoU (ties: the first), "first" the first one in ``gt`` order that reaches
    the threshold.
    """
    thr = np.asarray(thresholds, np.float64)
    tp = np.zeros((len(det), len(thr)), bool)
    if len(det) == 0 or len(gt) == 0:
        return tp
    n_cls = int(max(det.label.max(), gt.label.max())) + 1
    # ground truth as padded (video-class group, slot) tables, slots in annotation order
    keys, (gs, ge) = _group_tables(gt.video * n_cls + gt.label, np.nan, gt.start, gt.end)
    free = np.broadcast_to(~np.isnan(gs)[:, None, :], (len(keys), len(thr), gs.shape[1])).copy()
    pos, has_gt = _lookup(keys, det.video * n_cls + det.label)
    cand = np.flatnonzero(has_gt)  # detections in a (video, class) without ground truth are all false positives
    if len(cand) == 0:
        return tp
    order = np.argsort(-det.score[cand], kind="stable")
    rank = _ranks(pos[cand], order)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for r in range(rank.max() + 1):
        d = cand[by_rank[bounds[r]:bounds[r + 1]]]
        g = pos[d]
        iou = interval_iou(det.start[d, None], det.end[d, None], gs[g], ge[g])  # (n, slots)
        ok = free[g] & (iou[:, None, :] >= thr[None, :, None])  # (n, thr, slots)
        if rule == "best":
            pick = np.where(ok, iou[:, None, :], -1.0).argmax(-1)
        elif rule == "first":
            pick = ok.argmax(-1)
        else:
            raise ValueError(f"unknown matching rule {rule!r}")
        hit = ok.any(-1)
        tp[d] = hit
        rows, cols = np.nonzero(hit)
        free[g[rows], cols, pick[rows, cols]] = False
    return tp


def overlaps_any(det: Segments, amb: Segments) -> np.ndarray:
    """(n_det,) bool: does each detection overlap (intersection > 0) a segment of ``amb`` in its video."""
    out = np.zeros(len(det), bool)
    if len(det) == 0 or len(amb) == 0:
        return out
    vids, (table_s, table_e) = _group_tables(amb.video, np.nan, amb.start, amb.end)
    pos, sel = _lookup(vids, det.video)
    p = pos[sel]
    inter = np.minimum(det.end[sel, None], table_e[p]) - np.maximum(det.start[sel, None], table_s[p])
    out[sel] = (inter > 0).any(1)
    return out


# ------------------------------------------------------------------------ AP


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """ActivityNet's interpolated_prec_rec along the last axis: area under the precision envelope."""
    shape = precision.shape[:-1]
    mprec = np.concatenate([np.zeros(shape + (1,)), precision, np.zeros(shape + (1,))], -1)
    mrec = np.concatenate([np.zeros(shape + (1,)), recall, np.ones(shape + (1,))], -1)
    envelope = np.flip(np.maximum.accumulate(np.flip(mprec, -1), -1), -1)
    return (np.diff(mrec, axis=-1) * envelope[..., 1:]).sum(-1)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Non-interpolated AP of one ranking (mean precision at each positive), as W-TALC's classification mAP."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(truth, bool)[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def pr_curves(tp: np.ndarray, counted: np.ndarray, score: np.ndarray, npos: int):
    """Precision and recall (n_thr, n) of detections ranked by score; uncounted (ignored) ones add nothing."""
    order = np.argsort(-score, kind="stable")
    tp, counted = tp[order].T, counted[order].T
    tpc = np.cumsum(tp & counted, -1)
    fpc = np.cumsum(~tp & counted, -1)
    precision = np.divide(tpc, tpc + fpc, out=np.zeros(tpc.shape), where=(tpc + fpc) > 0)
    return precision, tpc / max(npos, 1)


@dataclass
class Result:
    thresholds: list[float]
    ap: np.ndarray  # (n_classes, n_thr); nan for a class without ground truth
    f1: dict
    pr_at_f1_tiou: dict  # class -> (precision, recall) at tIoU 0.5


def detection_ap(det: Segments, gt: Segments, amb: Segments, n_classes: int, thresholds,
                 protocol: str = "activitynet", snippet_s: dict[int, float] | None = None) -> Result:
    """AP per class and threshold, and F1 at tIoU 0.5 (micro over classes), under ``protocol``.

    ``snippet_s`` (video index -> snippet seconds) is required by the d2net protocol's snippet grid.
    """
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    thr = [float(t) for t in thresholds]
    all_thr = thr + ([F1_TIOU] if F1_TIOU not in thr else [])
    if protocol == "d2net":
        if snippet_s is None:
            raise EvaluationError("the d2net protocol needs each video's snippet duration")
        det, gt, amb = (_on_grid(x, snippet_s) for x in (det, gt, amb))
        keep = ~overlaps_any(det, amb)  # on the grid: the index ranges share a snippet
        det = det.take(keep)
        tp = match(det, gt, all_thr, rule="first")
        counted = np.ones_like(tp)
    else:
        tp = match(det, gt, all_thr, rule="best")
        counted = tp | ~overlaps_any(det, amb)[:, None]
    ap = np.full((n_classes, len(thr)), np.nan)
    npos = np.bincount(gt.label, minlength=n_classes)
    pr = {}
    f1_col = all_thr.index(F1_TIOU)
    for c in range(n_classes):
        if npos[c] == 0:
            continue
        sel = det.label == c
        if not sel.any():
            ap[c] = 0.0
            continue
        precision, recall = pr_curves(tp[sel], counted[sel], det.score[sel], npos[c])
        ap[c] = interpolated_ap(precision[:len(thr)], recall[:len(thr)])
        pr[c] = (precision[f1_col], recall[f1_col])
    has_gt = npos[det.label] > 0
    n_tp = int((tp[:, f1_col] & counted[:, f1_col] & has_gt).sum())
    n_fp = int((~tp[:, f1_col] & counted[:, f1_col] & has_gt).sum())
    p = n_tp / (n_tp + n_fp) if n_tp + n_fp else 0.0
    r = float(n_tp / npos.sum()) if npos.sum() else 0.0
    f1 = {"tiou": F1_TIOU, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
          "true_positives": n_tp, "false_positives": n_fp, "ground_truth": int(npos.sum())}
    return Result(thr, ap, f1, pr)


def _on_grid(s: Segments, snippet_s: dict[int, float]) -> Segments:
    """Seconds -> snippet indices, rounded as the reference does (round(sec * fps / snippet_frames))."""
    if len(s) == 0:
        return s
    lut = np.full(int(s.video.max()) + 1, np.nan)
    for v, d in snippet_s.items():
        if v < len(lut):
            lut[v] = d
    d = lut[s.video]
    if np.isnan(d).any():
        raise EvaluationError("a video has no snippet duration for the d2net protocol")
    return Segments(s.video, s.label, np.round(s.start / d), np.round(s.end / d), s.score)


# ------------------------------------------------------- a run, evaluated


def load_detections(path: str | Path) -> dict[str, list[dict]]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise EvaluationError(f"{path}: not an ActivityNet results file (no 'results' object)")
    return data["results"]


def evaluate(results: dict[str, list[dict]], ann, subset: str, thresholds, protocol: str = "activitynet",
             snippet_s: dict[str, float] | None = None, video_scores: dict[str, np.ndarray] | None = None,
             source: str = "detections") -> dict:
    """Metrics of ActivityNet-format ``results`` against the ``subset`` of an Annotations table.

    A predicted label outside the class list, or a detection for a video that is
    not in the subset, is an error naming it. ``video_scores`` (video -> (C,)
    scores in ``ann.classes`` order) adds video-level classification mAP.
    """
    classes = list(ann.classes)
    cidx = {c: i for i, c in enumerate(classes)}
    videos = ann.videos_in(subset)
    vidx = {v: i for i, v in enumerate(videos)}
    rows = []
    for video, dets in results.items():
        if video not in vidx:
            raise EvaluationError(f"{source}: video {video!r} is not in the {subset!r} ground truth")
        for d in dets:
            if d["label"] not in cidx:
                raise EvaluationError(f"{source}: video {video}: label {d['label']!r} is not in the ground truth "
                                      f"classes ({', '.join(classes)})")
            rows.append((video, d["label"], d["segment"][0], d["segment"][1], d["score"]))
    det = segments(rows, vidx, cidx, scored=True)
    gt = segments(((s.video, s.label, s.start_s, s.end_s) for s in ann.segments if s.video in vidx), vidx, cidx)
    amb_idx = {**cidx, "Ambiguous": 0}
    amb = segments(((s.video, "Ambiguous", s.start_s, s.end_s) for s in ann.ambiguous if s.video in vidx),
                   vidx, amb_idx)
    grid = None
    if protocol == "d2net":
        missing = [v for v in videos if v not in (snippet_s or {})]
        if missing:
            raise EvaluationError(f"the d2net protocol needs the snippet duration of {', '.join(missing[:5])}")
        grid = {vidx[v]: snippet_s[v] for v in videos}
    res = detection_ap(det, gt, amb, len(classes), thresholds, protocol, grid)
    evaluated = [c for c in range(len(classes)) if not np.isnan(res.ap[c, 0])]
    for c in set(range(len(classes))) - set(evaluated):
        log.warning("class %s has no ground truth in the %s subset: left out of the mAP", classes[c], subset)
    mean = res.ap[evaluated].mean(0) * 100 if evaluated else np.zeros(len(res.thresholds))
    out = {
        "protocol": protocol,
        "subset": subset,
        "tiou_thresholds": res.thresholds,
        "map": {f"{t:g}": round(float(m), 4) for t, m in zip(res.thresholds, mean)},
        "average_map": round(float(mean.mean()), 4),
        "ap_per_class": {classes[c]: [round(float(a) * 100, 4) for a in res.ap[c]] for c in evaluated},
        "f1": res.f1,
        "n_videos": len(videos),
        "n_videos_with_detections": sum(1 for v in results if results[v]),
        "n_detections": len(det),
        "n_ground_truth": len(gt),
        "n_ambiguous": len(amb),
        "pr_at_tiou_0.5": {classes[c]: _thin(p, r) for c, (p, r) in res.pr_at_f1_tiou.items()},
    }
    if video_scores is not None:
        out["classification_map"] = classification_map(video_scores, ann, videos)
    return out


def placed_at_random(results: dict[str, list[dict]], lengths_s: dict[str, float], seed: int) -> dict:
    """The same detections (label, length, score) at uniformly random places in their videos."""
    rng = np.random.default_rng(seed)
    out = {}
    for v, dets in results.items():
        moved = []
        for d in dets:
            a, b = d["segment"]
            room = max(lengths_s.get(v, b) - (b - a), 0.0)
            start = float(rng.uniform(0, room)) if room > 0 else 0.0
            moved.append({**d, "segment": [start, start + (b - a)]})
        out[v] = moved
    return out


def chance_level(results, ann, subset: str, thresholds, protocol: str, lengths_s: dict[str, float],
                 snippet_s=None, seeds: int = 5) -> dict:
    """mAP of the detections placed at random (mean of ``seeds`` draws): what localization must beat."""
    runs = [evaluate(placed_at_random(results, lengths_s, seed), ann, subset, thresholds, protocol, snippet_s)
            for seed in range(seeds)]
    keys = runs[0]["map"].keys()
    return {"map": {k: round(float(np.mean([r["map"][k] for r in runs])), 4) for k in keys},
            "average_map": round(float(np.mean([r["average_map"] for r in runs])), 4),
            "f1": {"f1": float(np.mean([r["f1"]["f1"] for r in runs]))}, "seeds": seeds}


def classification_map(video_scores: dict[str, np.ndarray], ann, videos) -> float:
    """Video-level classification mAP (x100) over classes present in ``videos``."""
    videos = [v for v in videos if v in video_scores]
    if not videos:
        return 0.0
    scores = np.stack([np.asarray(video_scores[v], np.float64) for v in videos])
    truth = np.stack([np.isin(ann.classes, ann.labels_of(v)) for v in videos])
    aps = [average_precision(scores[:, c], truth[:, c]) for c in range(len(ann.classes)) if truth[:, c].any()]
    return round(float(np.mean(aps)) * 100, 4) if aps else 0.0


def _thin(precision: np.ndarray, recall: np.ndarray, points: int = 200) -> dict:
    """A precision-recall curve cut to at most ``points`` points, for the report's plot."""
    idx = np.unique(np.linspace(0, len(precision) - 1, min(points, len(precision))).round().astype(int))
    return {"precision": [round(float(x), 4) for x in precision[idx]],
            "recall": [round(float(x), 4) for x in recall[idx]]}


def unlearnable_classes(ann, train_subset: str, test_subset: str) -> list[str]:
    """Classes with ground truth in the test subset and no training video: the model cannot have learned
    them (weak labels come only from the training subset), so their AP is 0 whatever it does."""
    trained = {s.label for s in ann.segments if s.subset == train_subset}
    tested = {s.label for s in ann.segments if s.subset == test_subset}
    return [c for c in ann.classes if c in tested and c not in trained]
