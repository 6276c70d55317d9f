"""train: D2-Net from video-level labels on per-video I3D features, seeded, checkpointed, resumable.

Batches are drawn uniformly with replacement from the training subset (as
the reference does), every video brought to L = min(max_seqlen, longest in
the batch): longer ones by a random contiguous crop, shorter ones
zero-padded. Adam with the preset's lr and weight decay, no schedule. A
step is skipped when the loss is not finite or not positive (reference).

Every ``checkpoint_every`` iterations (a runtime setting) the whole state (model, optimizer,
the numpy and torch random states, the log so far) is written atomically
to ``checkpoint.pt``; a rerun resumes from it and ends with the same
weights as an uninterrupted run. Outputs: ``model.pt`` (weights, running
background, classes, settings, and the signature of the features it was
trained on: sampling, flow and weights, which predict checks), ``log.csv``,
``loss.png``, and ``test_outputs/`` (the model's outputs on the test subset
every ``eval_every`` iterations; rule curve scores them: pipeline/learning_curve.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.losses import d2net_loss
from pipeline.compute.checkpoint import build_model, save_torch
from pipeline.core.feature_files import read_features
from pipeline.core.io import atomic_write_text
from pipeline.core.progress import progress_bar
from pipeline.compute.device import torch_device
from pipeline.core.settings import TrainSettings

LOG_COLUMNS = ("iteration", "total", "cls", "ds", "dv", "seconds")


def sample_batch(rng: np.random.Generator, feats: list[np.ndarray], labels: np.ndarray, s: TrainSettings):
    """(features (B, L, D), seq_len (B,), labels (B, C)) drawn as the reference draws them."""
    idx = rng.choice(len(feats), size=s.batch_size)
    L = min(s.max_seqlen, max(len(feats[i]) for i in idx))
    dim = feats[0].shape[1]
    x = np.zeros((len(idx), L, dim), np.float32)
    seq = np.zeros(len(idx), np.int64)
    for j, i in enumerate(idx):
        f = feats[i]
        if len(f) > L:
            start = int(rng.integers(len(f) - L))
            f = f[start:start + L]
        x[j, :len(f)] = f
        seq[j] = len(f)
    return torch.from_numpy(x), torch.from_numpy(seq), torch.from_numpy(labels[idx])


def _save(path: Path, obj) -> None:
    save_torch(obj, path)


def _write_log(path: Path, rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LOG_COLUMNS)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_losses(rows, path: Path, title: str) -> None:
    from pipeline.core.figures import pyplot, save_png

    plt = pyplot()
    a = np.asarray(rows, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    # pDMI acts on alternate iterations, so the raw curves zigzag: draw them faint, a running mean on top.
    window = max(1, min(50, len(a) // 20))
    kernel = np.ones(window) / window
    for col, name in ((1, "total"), (2, "L_cls / L_Dis"), (3, "L_DS"), (4, "L_DV")):
        if len(a) and np.any(a[:, col]):
            line, = ax.plot(a[:, 0], a[:, col], lw=0.5, alpha=0.25)
            smooth = np.convolve(a[:, col], kernel, mode="valid")
            ax.plot(a[window - 1:, 0], smooth, color=line.get_color(), lw=1.5, label=f"{name} (mean of {window})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def inputs_fingerprint(feats: list[np.ndarray], labels: np.ndarray, classes: list[str]) -> str:
    """sha256 of everything training reads: the classes, the labels and every training video's features."""
    import hashlib

    h = hashlib.sha256("\n".join(classes).encode())
    h.update(np.ascontiguousarray(labels, np.float32).tobytes())
    for f in feats:
        h.update(str(f.shape).encode())
        h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()


def resumable(path: Path, settings: dict, inputs: str) -> dict | None:
    """The checkpoint to resume from, or None. One that cannot be read, or was made with other settings or
    on other inputs (features, labels, classes), is set aside (renamed, never deleted) with a line saying why."""
    from pipeline.compute.checkpoint import CheckpointError, read_checkpoint

    if not path.exists():
        return None
    why = None
    try:
        ckpt = read_checkpoint(path, keys=("model", "optimizer", "iteration", "settings", "classes", "log"))
        if ckpt["settings"] != settings:
            why = "it was made with other training settings"
        elif ckpt.get("inputs") != inputs:
            why = "it was made on other inputs (training features, labels or classes changed)"
    except CheckpointError as e:
        why = str(e)
    if why is None:
        return ckpt
    aside = path.with_name(f"{path.name}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    print(f"train: not resuming from {path}: {why}; moved to {aside.name}, training from the start",
          file=sys.stderr)
    return None


def train(feats: list[np.ndarray], labels: np.ndarray, classes: list[str], s: TrainSettings, out_dir: str | Path,
          progress: bool = False, device: str = "auto", feature_signature: dict | None = None,
          test_set=None, scoring=None, checkpoint_every: int = 500) -> Path:
    """Train (or resume from ``checkpoint.pt``) in ``out_dir``; returns the path of model.pt.

    With ``s.eval_every`` and a ``test_set`` (pipeline/compute/curve_points.py), the model's outputs on the test
    subset are saved every ``eval_every`` iterations and at the end (``test_outputs/``: rule curve scores
    them); with ``s.select_on_test`` and a ``scoring``, each point is scored here too and the best point's
    weights (mean mAP over the tIoU thresholds) become model.pt.
    """
    import shutil

    from pipeline.compute import curve_points

    if s.select_on_test and s.eval_every and test_set is not None and scoring is None:
        raise ValueError("select_on_test needs the localize and evaluation settings to score the test subset")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch_device(device, stage="train")
    torch.manual_seed(s.seed)
    model = build_model(len(classes), s, feats[0].shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    rng = np.random.default_rng(s.seed)
    pairs = torch.Generator().manual_seed(s.seed)
    rows: list[list[float]] = []
    best: dict = {}  # select_on_test: {"iteration", "average_map", "state"}
    start = 0
    ckpt_path = out / "checkpoint.pt"
    # saved test outputs so far: not a declared output until training ends (a rerun resumes beside them)
    points = out / ".test_outputs.partial"
    inputs = inputs_fingerprint(feats, labels, classes)
    ckpt = resumable(ckpt_path, asdict(s), inputs)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        pairs.set_state(ckpt["pair_rng"])
        rows, start = ckpt["log"], ckpt["iteration"]
        best = ckpt.get("best", {})
        print(f"train: resuming from {ckpt_path} at iteration {start}", file=sys.stderr)
    else:
        shutil.rmtree(points, ignore_errors=True)
    bar = progress_bar(total=s.iterations, initial=start, desc=f"train {out.name}", unit="it") if progress else None
    model.train()
    t0 = time.perf_counter()
    for it in range(start, s.iterations):
        x, seq, lab = (t.to(device) for t in sample_batch(rng, feats, labels, s))
        outp = model(x)
        total, terms, new_bg = d2net_loss(outp, seq, lab, model.running_bg, s, it, pairs)
        model.running_bg.copy_(new_bg.detach())
        if torch.isfinite(total) and total.item() > 0:
            opt.zero_grad()
            total.backward()
            opt.step()
        rows.append([it + 1, total.item(), terms["cls"], terms["ds"], terms["dv"],
                     round(time.perf_counter() - t0, 3)])
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{total.item():.3f}", cls=f"{terms['cls']:.3f}", ds=f"{terms['ds']:.3f}",
                            dv=f"{terms['dv']:.3f}")
        if test_set is not None and s.eval_every and ((it + 1) % s.eval_every == 0 or it + 1 == s.iterations):
            outs = curve_points.outputs(model, test_set)  # read-only: dropout off, no gradient, no RNG
            curve_points.save_outputs(outs, classes, s.topk_divisor, it + 1, points)
            if s.select_on_test:
                r = curve_points.score(outs, classes, s.topk_divisor, test_set.spans, scoring)
                if not best or r["average_map"] > best["average_map"]:
                    best = {"iteration": it + 1, "average_map": r["average_map"],
                            "state": curve_points.copy_state(model)}
        if (it + 1) % checkpoint_every == 0 and it + 1 < s.iterations:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                     "pair_rng": pairs.get_state(), "log": rows, "iteration": it + 1,
                     "settings": asdict(s), "classes": list(classes), "best": best, "inputs": inputs}
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state()
            # The checkpoint (not a declared output) is the resumable state; the declared outputs
            # (log.csv, model.pt, ...) appear only at the end, so an interrupted job leaves none of them
            # for Snakemake to call incomplete, and a plain rerun resumes.
            _save(ckpt_path, state)
    if bar is not None:
        bar.close()
    _write_log(out / "log.csv", rows)
    plot_losses(rows, out / "loss.png", f"D2-Net ({s.variant})")
    weights = best["state"] if best else model.state_dict()
    selected = {"iteration": best["iteration"], "on": "test subset", "average_map": best["average_map"]} if best else {}
    _save(out / "model.pt", {"model": weights, "classes": list(classes), "settings": asdict(s),
                             "feature_dim": feats[0].shape[1], "features": feature_signature or {},
                             "selected": selected})
    final = out / "test_outputs"
    shutil.rmtree(final, ignore_errors=True)
    if points.exists():
        points.rename(final)
    else:
        final.mkdir()
    ckpt_path.unlink(missing_ok=True)
    return out / "model.pt"


def training_set(features_dir: str | Path, annotations_dir: str | Path, subset: str, skipped: set[str] = frozenset()):
    """Features and multi-hot labels of the subset's videos that have snippets and a label."""
    from pipeline.core.annotation_io import read_table

    ann = read_table(annotations_dir)
    index = {c: i for i, c in enumerate(ann.classes)}
    feats, labels, names = [], [], []
    for v in ann.videos_in(subset):
        labs = ann.labels_of(v)
        if v in skipped or not labs:
            continue
        path = Path(features_dir) / f"{v}.npy"
        f = read_features(path)
        if len(f) == 0:
            continue
        y = np.zeros(len(ann.classes), np.float32)
        y[[index[c] for c in labs]] = 1
        feats.append(f)
        labels.append(y)
        names.append(v)
    if not feats:
        raise ValueError(f"{annotations_dir}: no {subset!r} video with features and a label to train on")
    return feats, np.stack(labels), ann.classes, names


def main(argv=None) -> int:
    from pipeline.core.settings import TrainRuntime, from_dict
    from pipeline.core.run_files import read_skipped

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True, help="folder of <video>.npy")
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--skipped", help="skipped_videos.json")
    ap.add_argument("--subset", required=True)
    ap.add_argument("--settings", default="{}", help="TrainSettings as JSON")
    ap.add_argument("--runtime", default="{}", help="TrainRuntime as JSON (device, checkpoint_every)")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--feature-signature", default="{}",
                    help="JSON: how the features were made (recorded in model.pt for predict)")
    ap.add_argument("--test-features", help="folder of the test subset's <video>.npy (saved test outputs)")
    ap.add_argument("--test-decoded", help="folder of the test subset's <video>/meta.json")
    ap.add_argument("--test-subset", help="the subset whose outputs are saved (the learning curve)")
    ap.add_argument("--localize", help="select_on_test only: LocalizeSettings as JSON")
    ap.add_argument("--evaluation", help="select_on_test only: EvaluationSettings as JSON")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    runtime = from_dict(TrainRuntime, json.loads(args.runtime), "train runtime")
    if args.threads:
        torch.set_num_threads(args.threads)
    skipped = read_skipped(args.skipped) if args.skipped else set()
    feats, labels, classes, names = training_set(args.features, args.annotations, args.subset, skipped)
    absent = [c for c, n in zip(classes, labels.sum(0)) if n == 0]
    if absent:  # weak labels come only from here: these classes get no positive example
        print(f"train: warning: no training video of class(es) {', '.join(absent)}: the model cannot learn them",
              file=sys.stderr)
    s = TrainSettings.from_dict(json.loads(args.settings))
    print(f"train: {len(names)} videos, {len(classes)} classes, {s.iterations} iterations", file=sys.stderr)
    test_set = scoring = None
    if s.eval_every and args.test_features:
        from pipeline.core.annotation_io import read_table
        from pipeline.compute.curve_points import Scoring, load_test_set
        from pipeline.core.settings import EvaluationSettings, LocalizeSettings

        ann = read_table(args.annotations)
        test_set = load_test_set(args.test_features, args.test_decoded,
                                 [v for v in ann.videos_in(args.test_subset) if v not in skipped])
        if s.select_on_test:
            scoring = Scoring(ann, args.test_subset, from_dict(LocalizeSettings, json.loads(args.localize), "localize"),
                              from_dict(EvaluationSettings, json.loads(args.evaluation), "evaluation"))
    train(feats, labels, classes, s, args.out, progress=not args.no_progress, device=runtime.device,
          feature_signature=json.loads(args.feature_signature), test_set=test_set, scoring=scoring,
          checkpoint_every=runtime.checkpoint_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
