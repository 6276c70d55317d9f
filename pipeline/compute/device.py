"""Where torch work runs: the one place that turns a stage's device and thread settings into a device."""
from __future__ import annotations

import torch


def torch_device(name: str = "auto", threads: int = 0, stage: str = "") -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; ``threads`` > 0 sets torch's CPU threads. Under the
    workflow a CUDA job takes a device slot (pipeline/core/gpu_slots.py) and runs on that device."""
    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{stage or 'torch'}: device 'cuda' requested but no CUDA device is available")
    if name == "cuda":
        from pipeline.core.gpu_slots import cuda_index

        index = cuda_index(stage)  # a free GPU of the node when the workflow runs several jobs at once
        if index is not None:
            return torch.device("cuda", index)
    return torch.device(name)
