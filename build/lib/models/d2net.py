"""D2-Net (Narayan et al., ICCV 2021): weakly supervised temporal action localization on I3D features.

Two parallel streams, RGB (features[:, :, :1024]) and flow ([1024:]), each of
three temporal convolutions: two residual layers with leaky ReLU (0.2) and a
classifier. The streams are one grouped convolution (groups=2), as in the
reference code. The TCAM is the average of the two streams' sigmoid outputs;
the embedding is the average of the two streams' second-layer activations.
The running reference background embedding lives in the model (a buffer:
no gradient, saved in checkpoints, used at test time).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class D2NetOutput:
    tcam: torch.Tensor  # (B, T, C) probabilities, the mean of both streams' sigmoids
    logits_rgb: torch.Tensor  # (B, T, C)
    logits_flow: torch.Tensor  # (B, T, C)
    embedding: torch.Tensor  # (B, T, 1024) mean of both streams' second-layer activations


class D2Net(nn.Module):
    def __init__(self, n_classes: int, feature_dim: int = 2048, kernel_size: int = 3, dilation: int = 1,
                 classifier_kernel_size: int = 1, classifier_dilation: int = 1, dropout: float = 0.7):
        super().__init__()
        if feature_dim % 2:
            raise ValueError(f"feature_dim must hold two equal streams, got {feature_dim}")
        self.n_classes, self.feature_dim = n_classes, feature_dim
        pad = (kernel_size - 1) // 2 * dilation
        cpad = (classifier_kernel_size - 1) // 2 * classifier_dilation
        self.conv = nn.Conv1d(feature_dim, feature_dim, kernel_size, padding=pad, dilation=dilation, groups=2)
        self.conv1 = nn.Conv1d(feature_dim, feature_dim, kernel_size, padding=pad, dilation=dilation, groups=2)
        self.classifier = nn.Conv1d(feature_dim, 2 * n_classes, classifier_kernel_size, padding=cpad,
                                    dilation=classifier_dilation, groups=2)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("running_bg", torch.zeros(1, feature_dim // 2))
        for m in (self.conv, self.conv1, self.classifier):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> D2NetOutput:
        """features (B, T, 2048) = [RGB | flow]. Dropout acts in train mode only (the embedding is taken after it)."""
        x = features.transpose(1, 2)
        x1 = F.leaky_relu(self.conv(x), 0.2) + x
        x2 = F.leaky_relu(self.conv1(x1), 0.2) + x1
        x2 = self.dropout(x2)
        cls = self.classifier(x2).transpose(1, 2)
        half, c = self.feature_dim // 2, self.n_classes
        emb = x2.transpose(1, 2)
        logits_rgb, logits_flow = cls[..., :c], cls[..., c:]
        tcam = (torch.sigmoid(logits_rgb) + torch.sigmoid(logits_flow)) / 2
        return D2NetOutput(tcam, logits_rgb, logits_flow, (emb[..., :half] + emb[..., half:]) / 2)
