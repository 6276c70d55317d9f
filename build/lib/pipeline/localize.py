"""localize: a trained D2-Net's TCAM -> scored action segments, in the ActivityNet results format.

Per test video, as the reference's test.py and detectionMAP.getDetections do
(docs/d2net.md, "Localization"):

1. TCAM (mean of both streams' sigmoids) and the bottom-up attention
   lambda'_t = (1 - cos(embedding_t, running background)) / 2; the TCAM is
   re-weighted by it (ActivityNet also rescales lambda' to a maximum of 2).
2. Class selection from the re-weighted TCAM's top-k means (k = floor(T / 8),
   T / 4 for ActivityNet): THUMOS keeps classes above half the best one;
   ActivityNet keeps at most two (``top2``).
3. For each kept class, proposals are the runs of at least two snippets above
   each threshold (0.025 to 0.5 in steps of 0.025 by default: the paper's
   range; the reference code stops at 0.475), scored by outer-inner contrast
   with 25% inflation on each side and dropped when the contrast is too poor.
4. Class-wise greedy NMS (IoU 0.5, the paper; the reference code uses 0.3),
   then only detections scoring at least 10% of the video's best are kept
   (the paper's S_th; ``keep_scope: class`` keeps those above 10% of their
   class's best in the video, as the reference code does).

Snippet indices become seconds with the snippet duration decode recorded.
Besides ``detections.json`` the stage writes ``scores.npz``: per video the
video-level class scores (top-k MIL pooling, as in training), the snippet
duration and the re-weighted TCAM, for evaluation and the report's timelines.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pipeline.feature_files import read_features
from pipeline.intervals import interval_iou, snippet_centres, snippet_span
from pipeline.io import atomic_path, atomic_write_json
from pipeline.progress import progress_bar
from pipeline.settings import LocalizeSettings

# ------------------------------------------------------------------ numerics


def bottom_up_attention(embedding: np.ndarray, running_bg: np.ndarray, rescale: bool = False) -> np.ndarray:
    """lambda'_t = (1 - cos(embedding_t, background)) / 2 in [0, 1]; (T, D), (D,) -> (T,)."""
    num = embedding @ running_bg
    den = np.linalg.norm(embedding, axis=1) * np.linalg.norm(running_bg)
    cos = num / np.maximum(den, 1e-8)  # torch's cosine_similarity eps, as the reference
    atn = (1 - cos) / 2
    if rescale and atn.max() > 0:
        atn = atn * 2 / atn.max()
    return atn


def select_classes(tcam: np.ndarray, topk_divisor: int, rule: str = "half_max") -> np.ndarray:
    """(C,) bool: the classes a video is localized for, from its (T, C) re-weighted TCAM."""
    k = max(1, int(len(tcam) / topk_divisor))
    cs = -np.sort(-tcam, axis=0)[:k].mean(0)
    if rule == "half_max":
        return (cs > cs.max() / 2) & (cs > 0)
    if rule == "top2":
        third = np.sort(cs)[-3] if len(cs) >= 3 else -np.inf
        return cs > max(1.0 if (cs > 1).any() else 0.5, third)
    raise ValueError(f"unknown class_selection {rule!r}")


def proposals(seq: np.ndarray, s: LocalizeSettings) -> np.ndarray:
    """(n, 3) [start, end, score] snippet runs of ``seq`` (T,) above each threshold, outer-inner scored."""
    T = len(seq)
    thr = s.threshold_values()
    above = np.zeros((len(thr), T + 2), bool)
    above[:, 1:-1] = seq[None, :] > thr[:, None]
    edges = np.diff(above.astype(np.int8), axis=1)
    starts = np.nonzero(edges == 1)[1]  # row-major: runs of each threshold in order, starts and ends paired
    ends = np.nonzero(edges == -1)[1]
    keep = ends - starts >= s.min_snippets
    st, en = starts[keep], ends[keep]
    if len(st) == 0:
        return np.zeros((0, 3))
    cs = np.r_[0.0, np.cumsum(seq, dtype=np.float64)]
    inner = (cs[en] - cs[st]) / (en - st)
    lt = np.maximum(1, ((en - st) * s.inflation).astype(np.int64))
    l0, r1 = np.maximum(0, st - lt), np.minimum(T, en + lt)
    has_l, has_r = st > 0, en < T
    left = np.where(has_l, (cs[st] - cs[l0]) / np.maximum(st - l0, 1), 0.0)
    right = np.where(has_r, (cs[r1] - cs[en]) / np.maximum(r1 - en, 1), 0.0)
    n_sides = has_l.astype(int) + has_r
    outer = (left + right) / np.maximum(n_sides, 1)
    score = np.where(n_sides > 0, inner - outer, inner)
    ok = (n_sides == 0) | ((outer - inner + 1) / 2 <= s.max_contrast)
    return np.stack([st, en, score], 1)[ok].astype(np.float64)


def nms(props: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS on [start, end) snippet sets: indices of the kept rows, best first."""
    order = np.argsort(-props[:, 2], kind="stable")
    kept = []
    while len(order):
        i, rest = order[0], order[1:]
        kept.append(i)
        order = rest[interval_iou(props[i, 0], props[i, 1], props[rest, 0], props[rest, 1]) < iou]
    return np.asarray(kept, np.int64)


def localize(tcam: np.ndarray, s: LocalizeSettings, topk_divisor: int) -> np.ndarray:
    """(n, 4) [class, start, end, score] in snippets from one video's (T, C) re-weighted TCAM."""
    out = []
    for c in np.flatnonzero(select_classes(tcam, topk_divisor, s.class_selection)):
        props = proposals(tcam[:, c], s)
        if len(props):
            props = props[nms(props, s.nms_iou)]
            if s.keep_scope == "class":
                props = props[props[:, 2] >= s.keep_fraction * props[:, 2].max()]
            out.append(np.c_[np.full(len(props), c), props])
    if not out:
        return np.zeros((0, 4))
    dets = np.concatenate(out)
    return dets[dets[:, 3] >= s.keep_fraction * dets[:, 3].max()] if s.keep_scope == "video" else dets


# ----------------------------------------------------------------- the stage


def model_outputs(model, features: np.ndarray, topk_divisor: int | None = None):
    """(TCAM re-weighted by the bottom-up attention before any rescaling (T, C) float64, the attention's
    maximum, video-level scores (C,) or None without ``topk_divisor``) of one video's features: all that
    localization needs of the model, and nothing that depends on a localization setting."""
    from models.losses import video_scores

    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(features, np.float32))[None])
    atn = bottom_up_attention(out.embedding[0].numpy().astype(np.float64),
                              model.running_bg[0].numpy().astype(np.float64))
    scores = (video_scores(out.tcam, torch.tensor([len(features)]), topk_divisor)[0].numpy()
              if topk_divisor else None)
    return out.tcam[0].numpy() * atn[:, None], float(atn.max()) if len(atn) else 0.0, scores


def reweighted(wtcam: np.ndarray, atn_max: float, rescale: bool) -> np.ndarray:
    """The re-weighted TCAM localization reads: ActivityNet rescales the attention to a maximum of 2."""
    return (wtcam * (2 / atn_max) if rescale and atn_max > 0 else wtcam).astype(np.float32)


def infer(model, features: np.ndarray, s: LocalizeSettings, topk_divisor: int):
    """(re-weighted TCAM (T, C), video-level scores (C,)) of one video's features."""
    wtcam, atn_max, scores = model_outputs(model, features, topk_divisor)
    return reweighted(wtcam, atn_max, s.attention_rescale), scores


def to_results(dets: np.ndarray, classes: list[str], stride_s: float, window_s: float | None = None) -> list[dict]:
    """Detections in snippets -> ActivityNet results; a run of snippets [a, b) spans ``snippet_span(a, b)``."""
    out = []
    for c, a, b, score in dets[np.argsort(-dets[:, 3], kind="stable")]:
        start, end = snippet_span(a, b, stride_s, stride_s if window_s is None else window_s)
        out.append({"label": classes[int(c)], "score": round(float(score), 6),
                    "segment": [round(float(start), 3), round(float(end), 3)]})
    return out


def run(model_path: str, features_dir: str, decoded_dir: str, videos: list[str], s: LocalizeSettings,
        detections_out: str, scores_out: str, progress: bool = True) -> dict:
    from pipeline.checkpoint import load_model

    model, classes, ts = load_model(model_path)
    results, arrays = {}, {}
    for v in progress_bar(videos, desc="localize", unit="video", enabled=progress):
        feats = read_features(Path(features_dir) / f"{v}.npy")
        if len(feats) == 0:
            continue
        stride_s, window_s = snippet_seconds(json.loads((Path(decoded_dir) / v / "meta.json").read_text()))
        tcam, scores = infer(model, feats, s, ts.topk_divisor)
        results[v] = to_results(localize(tcam, s, ts.topk_divisor), classes, stride_s, window_s)
        arrays[f"scores/{v}"] = scores.astype(np.float32)
        arrays[f"tcam/{v}"] = tcam.astype(np.float16)
        arrays[f"snippet_s/{v}"] = np.float64(stride_s)  # the grid step: snippet i starts at i * snippet_s
        arrays[f"window_s/{v}"] = np.float64(window_s)
    arrays["classes"] = np.asarray(classes)
    atomic_write_json(detections_out, {"version": "vidloc D2-Net", "results": results,
                                       "external_data": {"used": True, "details": "I3D features",
                                                         "settings": asdict(s)}})
    with atomic_path(scores_out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return results


def snippet_seconds(meta: dict) -> tuple[float, float]:
    """(stride, window) in seconds from a decode meta (older metas: non-overlapping snippets)."""
    window_s = float(meta["snippet_duration_s"])
    return float(meta.get("snippet_stride_s") or window_s), window_s


def read_scores(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(video -> video-level scores, video -> snippet seconds) from scores.npz."""
    with np.load(path, allow_pickle=False) as z:
        scores = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("scores/")}
        snippet_s = {k.split("/", 1)[1]: float(z[k]) for k in z.files if k.startswith("snippet_s/")}
    return scores, snippet_s


def read_lengths_s(path: str | Path) -> dict[str, float]:
    """video -> seconds covered by its snippets, from scores.npz."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            if k.startswith("tcam/"):
                v = k.split("/", 1)[1]
                step = float(z[f"snippet_s/{v}"])
                window = float(z[f"window_s/{v}"]) if f"window_s/{v}" in z.files else step
                out[v] = float(snippet_span(0, len(z[k]), step, window)[1])
    return out


def read_tcams(path: str | Path, videos) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(classes, video -> re-weighted TCAM (T, C), video -> snippet centres in seconds (T,)) for the given videos."""
    tcams, centres = {}, {}
    with np.load(path, allow_pickle=False) as z:
        for v in videos:
            if f"tcam/{v}" in z.files:
                tcams[v] = z[f"tcam/{v}"].astype(np.float32)
                step = float(z[f"snippet_s/{v}"])
                window = float(z[f"window_s/{v}"]) if f"window_s/{v}" in z.files else step
                centres[v] = snippet_centres(len(tcams[v]), step, window)
        return [str(c) for c in z["classes"]], tcams, centres


def main(argv=None) -> int:
    from pipeline.annotations import read_table
    from pipeline.skipped import read_skipped

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model.pt from train")
    ap.add_argument("--features", required=True, help="folder of <video>.npy")
    ap.add_argument("--decoded", required=True, help="folder of <video>/meta.json from decode")
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--subset", required=True, help="the subset to localize (the preset's test subset)")
    ap.add_argument("--skipped", help="skipped_videos.json")
    ap.add_argument("--settings", default="{}", help="LocalizeSettings as JSON")
    ap.add_argument("--detections", required=True, help="output detections.json")
    ap.add_argument("--scores", required=True, help="output scores.npz")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skipped = read_skipped(args.skipped) if args.skipped else set()
    videos = [v for v in read_table(args.annotations).videos_in(args.subset) if v not in skipped]
    s = LocalizeSettings.from_dict(json.loads(args.settings))
    results = run(args.model, args.features, args.decoded, videos, s, args.detections, args.scores)
    n = sum(len(d) for d in results.values())
    print(f"localize: {n} detections in {len(results)} videos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
