"""model.pt: the trained D2-Net's file, written by train and read by localize, predict and the learning curve.

A dict of tensors and plain data only, so it loads with ``weights_only``:
``model`` (state dict, running background included), ``classes``,
``settings`` (TrainSettings), ``feature_dim``, ``features`` (the signature of
the features it was trained on) and, when the model was selected on the test
set, ``selected``.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from models.d2net import D2Net
from pipeline.core.io import atomic_path
from pipeline.core.settings import TrainSettings


def build_model(n_classes: int, s: TrainSettings, feature_dim: int = 2048) -> D2Net:
    return D2Net(n_classes, feature_dim, s.kernel_size, s.dilation, s.classifier_kernel_size, s.classifier_dilation,
                 s.dropout)


MODEL_KEYS = ("model", "classes", "settings", "feature_dim")


class CheckpointError(ValueError):
    """A model or checkpoint file that cannot be used; the message names the file."""


def read_checkpoint(path: str | Path, keys=MODEL_KEYS) -> dict:
    """A file ``train`` wrote (tensors and plain data only: ``weights_only``, so a pickle carrying code is
    refused); any failure, or a missing key, is one CheckpointError naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # truncated, random bytes, a code-carrying pickle (UnpicklingError), not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first[:200]})") from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint written by train: missing {', '.join(missing)}")
    return ckpt


def load_model(path: str | Path) -> tuple[D2Net, list[str], TrainSettings]:
    ckpt = read_checkpoint(path)
    try:
        s = TrainSettings(**ckpt["settings"])  # pydantic: a key no TrainSettings has is refused
        model = build_model(len(ckpt["classes"]), s, ckpt["feature_dim"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: does not fit a D2-Net: {str(e).splitlines()[0][:200]}") from None
    return model.eval(), ckpt["classes"], s


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` through ``atomic_path`` (train's model.pt and checkpoints). Serialized in memory first:
    torch's own file writer reports a full disk as a RuntimeError without errno, a plain write says ENOSPC or
    EDQUOT."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())
