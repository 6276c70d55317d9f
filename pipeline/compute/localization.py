"""D2-Net's localization, shared by localize, predict and the learning curve: a trained model's TCAM and
bottom-up attention on one video's features, and from them scored segments in snippets, then seconds.
docs/d2net.md ("Localization") follows the steps; pipeline/localize.py is the stage that runs them."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.core.intervals import interval_iou, snippet_span
from pipeline.core.settings import LocalizeSettings


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
