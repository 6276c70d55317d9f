"""TV-L1's parameters, apart from the numerics so that the workflow can read them without importing torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV's parameters and defaults (``cv2.optflow.DualTVL1OpticalFlow_create()``)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
