"""Where torch work runs: the one place that turns a stage's device and thread settings into a device."""
from __future__ import annotations

import torch


def torch_device(name: str = "auto", threads: int = 0, stage: str = "") -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; ``threads`` > 0 sets torch's CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{stage or 'torch'}: device 'cuda' requested but no CUDA device is available")
    return torch.device(name)
