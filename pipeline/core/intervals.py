"""Temporal intervals: overlap (shared by localization NMS and evaluation matching) and snippet time spans."""
from __future__ import annotations

import numpy as np


def interval_iou(ps, pe, gs, ge):
    """tIoU of intervals (broadcast); on integer bounds it is the IoU of the index sets range(s, e)."""
    inter = np.clip(np.minimum(pe, ge) - np.maximum(ps, gs), 0, None)
    union = np.clip(pe - ps, 0, None) + np.clip(ge - gs, 0, None) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)


def snippet_span(first, last_excl, stride_s: float, window_s: float):
    """Seconds covered by snippets ``first`` .. ``last_excl - 1`` (broadcast).

    Snippet i spans [i * stride_s, i * stride_s + window_s]: with the default stride (the window)
    a run [a, b) is [a, b] * window_s; with overlapping snippets it ends one window after its last start.
    """
    first = np.asarray(first, dtype=np.float64)
    last_excl = np.asarray(last_excl, dtype=np.float64)
    return first * stride_s, (last_excl - 1) * stride_s + window_s


def snippet_centres(n: int, stride_s: float, window_s: float) -> np.ndarray:
    """(n,) centre in seconds of snippets 0 .. n - 1 (their spans as ``snippet_span`` gives them)."""
    return np.mean(snippet_span(np.arange(n), np.arange(n) + 1, stride_s, window_s), axis=0)


def snippet_seconds(meta: dict) -> tuple[float, float]:
    """(stride, window) in seconds from a decode meta (older metas: non-overlapping snippets)."""
    window_s = float(meta["snippet_duration_s"])
    return float(meta.get("snippet_stride_s") or window_s), window_s
