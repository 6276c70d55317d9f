"""Temporal interval overlap, shared by localization (NMS) and evaluation (matching)."""
from __future__ import annotations

import numpy as np


def interval_iou(ps, pe, gs, ge):
    """tIoU of intervals (broadcast); on integer bounds it is the IoU of the index sets range(s, e)."""
    inter = np.clip(np.minimum(pe, ge) - np.maximum(ps, gs), 0, None)
    union = np.clip(pe - ps, 0, None) + np.clip(ge - gs, 0, None) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)
