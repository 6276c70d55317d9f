"""curve: the learning curve, from test-subset outputs saved while training, scored with the run's settings.

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

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.settings import EvaluationSettings, LocalizeSettings, from_dict

# selected: 1 on the point whose weights became model.pt (select_on_test only)
CURVE_COLUMNS = ("iteration", "map_at_0.5", "average_map", "selected")


@dataclass
class TestSet:
    features: dict[str, np.ndarray]  # video -> (T, D)
    spans: dict[str, tuple[float, float]]  # video -> (stride_s, window_s)


@dataclass
class Scoring:
    """What scoring a point needs besides its outputs: the ground truth and the run's settings."""

    ann: object  # pipeline.annotations.Annotations
    subset: str
    localize: LocalizeSettings
    evaluation: EvaluationSettings


def test_spans(decoded_dir: str | Path, videos) -> dict[str, tuple[float, float]]:
    from pipeline.localize import snippet_seconds

    return {v: snippet_seconds(json.loads((Path(decoded_dir) / v / "meta.json").read_text())) for v in videos}


def load_test_set(features_dir: str | Path, decoded_dir: str | Path, videos) -> TestSet:
    """The test videos' features (those with snippets) and snippet spans."""
    from pipeline.feature_files import read_features

    feats = {}
    for v in videos:
        f = read_features(Path(features_dir) / f"{v}.npy")
        if len(f):
            feats[v] = f
    return TestSet(feats, test_spans(decoded_dir, feats))


def outputs(model, test: TestSet) -> dict[str, tuple[np.ndarray, float]]:
    """video -> (re-weighted TCAM before rescaling, float16 (T, C); the attention's maximum) of ``model``."""
    from pipeline.localize import model_outputs

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
    from pipeline.io import atomic_path

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
    from pipeline.evaluate import evaluate
    from pipeline.localize import localize, reweighted, to_results

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


def write_csv(rows: list[list[float]], path: Path, selected: int | None = None) -> None:
    from pipeline.io import atomic_write_text

    atomic_write_text(path, ",".join(CURVE_COLUMNS) + "\n" + "".join(
        f"{int(r[0])},{r[1]:.4f},{r[2]:.4f},{int(int(r[0]) == selected)}\n" for r in rows))


def read_csv(path: str | Path) -> list[tuple[int, float, float, bool]]:
    lines = Path(path).read_text().splitlines()[1:]
    return [(int(a), float(b), float(c), d == "1") for a, b, c, d in (line.split(",") for line in lines if line)]


def copy_state(model) -> dict:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def main(argv=None) -> int:
    from pipeline.annotations import read_table
    from pipeline.checkpoint import read_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outputs", required=True, help="test_outputs folder written by train")
    ap.add_argument("--model", required=True, help="model.pt (which point, if any, was selected)")
    ap.add_argument("--decoded", required=True, help="folder of the test videos' <video>/meta.json")
    ap.add_argument("--annotations", required=True, help="folder written by the durations stage")
    ap.add_argument("--subset", required=True, help="the test subset")
    ap.add_argument("--localize", default="{}", help="LocalizeSettings as JSON")
    ap.add_argument("--evaluation", default="{}", help="EvaluationSettings as JSON")
    ap.add_argument("--out", required=True, help="curve.csv")
    args = ap.parse_args(argv)
    scoring = Scoring(read_table(args.annotations), args.subset,
                      from_dict(LocalizeSettings, json.loads(args.localize), "localize"),
                      from_dict(EvaluationSettings, json.loads(args.evaluation), "evaluation"))
    videos = []
    for first in sorted(Path(args.outputs).glob("iter_*.npz"))[:1]:  # every point holds the same videos
        with np.load(first, allow_pickle=False) as z:  # the key list only, no array read
            videos = [k.split("/", 1)[1] for k in z.files if k.startswith("wtcam/")]
    rows = curve_rows(args.outputs, test_spans(args.decoded, videos), scoring)
    selected = read_checkpoint(args.model).get("selected") or {}
    write_csv(rows, Path(args.out), selected.get("iteration"))
    print(f"curve: {len(rows)} point(s) scored", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
