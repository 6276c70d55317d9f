"""TV-L1's parameters, apart from the numerics so that the workflow can read them without importing torch.

Declared once here (names, OpenCV's defaults, ranges, what each does): the workflow's ``flow.tvl1``
settings, their validation and the configuration reference (docs/configuration.md) come from this class.
"""
from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass


@dataclass(frozen=True, config=ConfigDict(extra="forbid", populate_by_name=True))
class TVL1Params:
    """OpenCV's parameters and defaults (``cv2.optflow.DualTVL1OpticalFlow_create()``)."""

    tau: float = Field(0.25, gt=0, description="time step of the numerical scheme")
    lambda_: float = Field(0.15, gt=0, alias="lambda", description="weight of the data term (smaller: smoother flow)")
    theta: float = Field(0.3, gt=0, description="coupling between the data and the smoothness terms")
    nscales: int = Field(5, ge=1, description="pyramid levels")
    warps: int = Field(5, ge=1, description="warpings per pyramid level")
    epsilon: float = Field(0.01, ge=0, description="stopping threshold of the inner iterations")
    inner_iterations: int = Field(30, ge=1, description="iterations of the inner loop per warp")
    outer_iterations: int = Field(10, ge=1, description="iterations of the outer loop per warp")
    scale_step: float = Field(0.8, gt=0, lt=1, description="downscaling factor between pyramid levels")
    median_filtering: int = Field(5, description="median filter size on the flow: 5, or 1 (off)",
                                  json_schema_extra={"alt": 1})

    def __post_init__(self):
        if self.median_filtering not in (1, 5):
            raise ValueError(f"tvl1: median_filtering must be 1 or 5, not {self.median_filtering}")
