"""D2-Net training speed on a THUMOS14-sized batch: the train stage's step vs reference-style baselines, same run.

    python bench/train.py [--iterations 5] [--batch 10] [--snippets 750]

Batch: 10 videos x 750 snippets x 2048 features, 20 classes, the full loss
(L_Dis + pDMI terms active). Timed per iteration (forward, loss, backward,
Adam step), best of the repeats:
- stage: what pipeline/train.py runs (fp32 eager, autograd anomaly detection off);
- baseline: the same model and loss in plain fp32 eager;
- reference config: the same with ``torch.autograd.set_detect_anomaly(True)``,
  which the reference code enables globally.
On a GPU (when there is one) the stage is timed there too, with the
projected time of the paper's 20k iterations.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.compute.train_step import step_seconds  # noqa: E402
from pipeline.core.settings import TrainSettings  # noqa: E402


def step_time(device: str, args, anomaly: bool = False) -> float:
    return step_seconds(TrainSettings(), 20, args.batch, args.snippets, args.iterations, device, anomaly)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--snippets", type=int, default=750)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {args.batch} x {args.snippets} x 2048")
    base = step_time("cpu", args)
    stage = step_time("cpu", args)
    ref = step_time("cpu", args, anomaly=True)
    print(f"CPU baseline fp32 eager: {1 / base:.3f} it/s")
    print(f"CPU stage:               {1 / stage:.3f} it/s  ratio {base / stage:.2f}  "
          f"(20k iterations: {20000 * stage / 3600:.1f} h)")
    print(f"CPU reference config (anomaly detection on): {1 / ref:.3f} it/s  stage is {ref / stage:.2f}x faster")
    if torch.cuda.is_available():
        g = step_time("cuda", args)
        print(f"{torch.cuda.get_device_name()}: {1 / g:.2f} it/s, 20k iterations in {20000 * g / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
