"""What a flow file holds: TV-L1 flow as uint8, and the decode record that travels with it.

``flow.npy`` is quantized by ``quantize`` (flow writes it) and read back by ``dequantize`` (features
feeds it to I3D's flow stream): both stages use this one definition of the mapping. ``DECODE_FIELDS``
is decode's record of how snippets were made, which flow's meta.json carries forward into the
features' provenance.
"""
from __future__ import annotations

import numpy as np

DECODE_FIELDS = ("fps", "snippet_frames", "snippet_stride", "snippet_duration_s", "snippet_stride_s", "n_snippets",
                 "sampling", "source_duration_s")


def quantize(flow: np.ndarray, bound: float = 20.0, mode: str = "floor") -> np.ndarray:
    """Float flow -> uint8: clip to [-bound, bound], map linearly onto 0..255 (floor or round)."""
    x = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    if mode == "floor":
        x = np.floor(x)
    elif mode == "round":
        x = np.rint(x)
    else:
        raise ValueError(f"quantize must be 'floor' or 'round', not {mode!r}")
    return np.clip(x, 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint8 flow -> float32 in [-1, 1], the I3D flow-stream input (x / 255 * 2 - 1)."""
    return q.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
