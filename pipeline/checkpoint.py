"""model.pt: the trained D2-Net's file, written by train and read by localize, predict and the learning curve.

A dict of tensors and plain data only, so it loads with ``weights_only``:
``model`` (state dict, running background included), ``classes``,
``settings`` (TrainSettings), ``feature_dim``, ``features`` (the signature of
the features it was trained on), ``localize`` (the preset's localization
settings) and, when the model was selected on the test set, ``selected``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.d2net import D2Net
from pipeline.settings import TrainSettings


def build_model(n_classes: int, s: TrainSettings, feature_dim: int = 2048) -> D2Net:
    return D2Net(n_classes, feature_dim, s.kernel_size, s.dilation, s.classifier_kernel_size, s.classifier_dilation,
                 s.dropout)


def read_checkpoint(path: str | Path) -> dict:
    """model.pt as written by ``train`` (tensors and plain data only: ``weights_only``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable model checkpoint: {e}") from None


def load_model(path: str | Path) -> tuple[D2Net, list[str], TrainSettings]:
    ckpt = read_checkpoint(path)
    s = TrainSettings(**ckpt["settings"])
    model = build_model(len(ckpt["classes"]), s, ckpt["feature_dim"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["classes"], s
