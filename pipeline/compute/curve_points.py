"""The learning curve's points, shared by train (which saves them) and the curve stage
(pipeline/learning_curve.py, which scores them): test-subset outputs saved while training, scored with the
run's settings.

Every ``eval_every`` iterations train saves the model's outputs on each test
video (dropout off): the TCAM re-weighted by the bottom-up attention before
any rescaling, and the attention's maximum, as float16 in
``test_outputs/iter_<n>.npz``. Nothing in them depends on a localization or
evaluation setting. This stage localizes and evaluates every saved point as
the localize and evaluate stages would (mAP@0.5 and the mean over the tIoU
thresholds) and writes ``curve.csv``, so tuning those settings reruns the
curve, never training. The curve is for reading (the report plots it); only
an experiment with ``select_on_test`` (the reference_code profile) keeps
the weights of its best point, which is model selection on the test set, as
the authors' code does and the report says: that run's training scores the
same outputs the same way, and so reads those settings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.settings import EvaluationSettings, LocalizeSettings



@dataclass
class TestSet:
    features: dict[str, np.ndarray]  # video -> (T, D)
    spans: dict[str, tuple[float, float]]  # video -> (stride_s, window_s)


@dataclass
class Scoring:
    """What scoring a point needs besides its outputs: the ground truth and the run's settings."""

    ann: object  # pipeline.core.annotation_io.Annotations
    subset: str
    localize: LocalizeSettings
    evaluation: EvaluationSettings


def test_spans(decoded_dir: str | Path, videos) -> dict[str, tuple[float, float]]:
    from pipeline.core.intervals import snippet_seconds

    return {v: snippet_seconds(json.loads((Path(decoded_dir) / v / "meta.json").read_text())) for v in videos}


def load_test_set(features_dir: str | Path, decoded_dir: str | Path, videos) -> TestSet:
    """The test videos' features (those with snippets) and snippet spans."""
    from pipeline.core.feature_files import read_features

    feats = {}
    for v in videos:
        f = read_features(Path(features_dir) / f"{v}.npy")
        if len(f):
            feats[v] = f
    return TestSet(feats, test_spans(decoded_dir, feats))


def outputs(model, test: TestSet) -> dict[str, tuple[np.ndarray, float]]:
    """video -> (re-weighted TCAM before rescaling, float16 (T, C); the attention's maximum) of ``model``."""
    from pipeline.compute.localization import model_outputs

    was_training = model.training
    model.eval()
    try:
        out = {}
        for v, f in test.features.items():
            wtcam, atn_max, _ = model_outputs(model, f)
            out[v] = (wtcam.astype(np.float16), atn_max)
        return out
    finally:
        model.train(was_training)


def save_outputs(outs: dict, classes: list[str], topk_divisor: int, iteration: int, folder: Path) -> Path:
    from pipeline.core.io import atomic_path

    arrays = {"classes": np.asarray(classes), "topk_divisor": np.int64(topk_divisor)}
    for v, (wtcam, atn_max) in outs.items():
        arrays[f"wtcam/{v}"] = wtcam
        arrays[f"atn_max/{v}"] = np.float64(atn_max)
    path = Path(folder) / f"iter_{iteration:07d}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def read_outputs(path: str | Path) -> tuple[list[str], int, dict[str, tuple[np.ndarray, float]]]:
    with np.load(path, allow_pickle=False) as z:
        outs = {k.split("/", 1)[1]: (z[k], float(z[f"atn_max/{k.split('/', 1)[1]}"])) for k in z.files
                if k.startswith("wtcam/")}
        return [str(c) for c in z["classes"]], int(z["topk_divisor"]), outs


def score(outs: dict, classes: list[str], topk_divisor: int, spans: dict, scoring: Scoring) -> dict:
    """{"map_at_0.5", "average_map"} of one point's outputs, as localize + evaluate would report them."""
    from pipeline.compute.localization import localize, reweighted, to_results
    from pipeline.core.metrics import evaluate

    s = scoring.localize
    results = {v: to_results(localize(reweighted(w.astype(np.float32), m, s.attention_rescale), s, topk_divisor),
                             classes, *spans[v])
               for v, (w, m) in outs.items()}
    m = evaluate(results, scoring.ann, scoring.subset, list(scoring.evaluation.tiou_thresholds),
                 scoring.evaluation.protocol, snippet_s={v: sp[0] for v, sp in spans.items()})
    return {"map_at_0.5": float(m["map"].get("0.5", float("nan"))), "average_map": float(m["average_map"])}


def curve_rows(folder: str | Path, spans: dict, scoring: Scoring) -> list[list[float]]:
    """[iteration, mAP@0.5, mean mAP] of every saved point, in order."""
    rows = []
    for path in sorted(Path(folder).glob("iter_*.npz")):
        classes, topk, outs = read_outputs(path)
        r = score(outs, classes, topk, spans, scoring)
        rows.append([int(path.stem.split("_")[1]), r["map_at_0.5"], r["average_map"]])
    return rows


def copy_state(model) -> dict:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
