"""The time of one D2-Net training step, measured: bench/train.py and the cost projection (pipeline/costs.py)
time training with it, without a training run."""
from __future__ import annotations

import time

import torch

from models.losses import d2net_loss
from pipeline.compute.checkpoint import build_model
from pipeline.core.settings import TrainSettings


def step_seconds(s: TrainSettings, n_classes: int, batch: int, snippets: int, iterations: int = 1,
                 device: str = "cpu", anomaly: bool = False) -> float:
    """Seconds of one training iteration (forward, the full loss with pDMI on, backward, Adam step) on random
    features of the given shape: the best of ``iterations`` after one warm-up. bench/train.py and the cost
    projection (pipeline/costs.py) time training with it."""
    from dataclasses import replace

    torch.manual_seed(0)
    s = replace(s, batch_size=batch, pdmi_start_iter=0)
    model = build_model(n_classes, s).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    x = torch.randn(batch, snippets, 2048, device=device)
    seq = torch.full((batch,), snippets, device=device)
    labels = torch.zeros(batch, n_classes, device=device)
    labels[torch.arange(batch), torch.arange(batch) % n_classes] = 1
    gen = torch.Generator().manual_seed(0)
    best = float("inf")
    with torch.autograd.set_detect_anomaly(anomaly):
        for i in range(iterations + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = model(x)
            total, _, bg = d2net_loss(out, seq, labels, model.running_bg, s, 2 * (i + 1), gen)
            model.running_bg.copy_(bg.detach())
            opt.zero_grad()
            total.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - t)
    return best
