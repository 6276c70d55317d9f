"""torchvision's S3D as an alternative RGB stream: 1024-d features, like I3D's Mixed_5c, so the
[RGB 1024 | flow 1024] layout and D2-Net's two equal streams are unchanged.

S3D (Xie et al., ECCV 2018) separates I3D's 3-D convolutions into spatial and
temporal ones. torchvision builds it (``torchvision.models.video.s3d``); its
Kinetics-400 weights are a plain state dict (``s3d-d76dad2f.pth``), which a
user downloads once and names in ``features.rgb_weights``: nothing is fetched
at run time. The input is what those weights were trained on: RGB in [0, 1]
normalized with torchvision's Kinetics mean and std. The feature is the mean
of the last feature map over time and space (torchvision's own 2x7x7 average
pool at 16 frames and 224 px, and defined for any clip size).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from models.i3d_weights import WeightsError, load_strict

# torchvision's S3D_Weights.KINETICS400_V1 preprocessing
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class S3DFeatures(nn.Module):
    """torchvision's S3D with ``features(x)``: (B, 3, T, H, W) normalized RGB -> (B, 1024)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        from torchvision.models.video import s3d

        self.net = s3d(weights=None, num_classes=num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def normalize(rgb01: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) RGB in [0, 1] -> the input S3D's Kinetics weights expect."""
    mean = torch.tensor(KINETICS_MEAN, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1, 1)
    return (rgb01 - mean) / std


def load_s3d(path: str | os.PathLike) -> S3DFeatures:
    """torchvision S3D weights (a state dict, e.g. s3d-d76dad2f.pth), read with ``weights_only`` and loaded strictly."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such S3D weights file") from None
    except Exception as e:  # a pickle with anything but tensors, or not a torch file at all
        raise WeightsError(f"{path}: not loadable as S3D weights with weights_only=True: {e}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    model = S3DFeatures()
    load_strict(model.net, state, str(path), layout="torchvision S3D weights (torchvision.models.video.s3d)")
    return model
