"""Scoring a model on the test subset while it trains: the learning curve, and the reference code's selection.

Every ``eval_every`` iterations train localizes the test videos with the
model as it is (dropout off) and evaluates the detections exactly as the
localize and evaluate stages do, giving mAP@0.5 and the mean mAP over the
preset's tIoU thresholds. The curve is for reading (the report plots it);
only an experiment with ``select_on_test`` (the reference_code profile) keeps
the weights of its best point, which is model selection on the test set, as
the authors' code does and the report says.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.settings import LocalizeSettings

# selected: 1 on the point whose weights became model.pt (select_on_test only)
CURVE_COLUMNS = ("iteration", "map_at_0.5", "average_map", "selected")


@dataclass
class TestSet:
    features: dict[str, np.ndarray]  # video -> (T, D)
    spans: dict[str, tuple[float, float]]  # video -> (stride_s, window_s)
    ann: object  # pipeline.annotations.Annotations
    subset: str
    thresholds: list[float]
    protocol: str


def load_test_set(features_dir: str, decoded_dir: str, annotations_dir: str, subset: str, thresholds, protocol: str,
                  skipped: set[str] = frozenset()) -> TestSet:
    from pipeline.annotations import read_table
    from pipeline.localize import snippet_seconds

    ann = read_table(annotations_dir)
    feats, spans = {}, {}
    for v in ann.videos_in(subset):
        if v in skipped:
            continue
        f = np.load(Path(features_dir) / f"{v}.npy", allow_pickle=False)
        if len(f):
            feats[v] = f.astype(np.float32)
            spans[v] = snippet_seconds(json.loads((Path(decoded_dir) / v / "meta.json").read_text()))
    return TestSet(feats, spans, ann, subset, list(thresholds), protocol)


def score(model, classes: list[str], topk_divisor: int, test: TestSet, s: LocalizeSettings) -> dict:
    """{"map_at_0.5", "average_map"} of ``model`` on the test set, as localize + evaluate would report them."""
    from pipeline.evaluate import evaluate
    from pipeline.localize import infer, localize, to_results

    was_training = model.training
    model.eval()
    results = {}
    try:
        for v, f in test.features.items():
            tcam, _ = infer(model, f, s, topk_divisor)
            results[v] = to_results(localize(tcam, s, topk_divisor), classes, *test.spans[v])
    finally:
        model.train(was_training)
    m = evaluate(results, test.ann, test.subset, test.thresholds, test.protocol,
                 snippet_s={v: sp[0] for v, sp in test.spans.items()})
    at = m["map"].get("0.5", float("nan"))
    return {"map_at_0.5": float(at), "average_map": float(m["average_map"])}


def write_csv(rows: list[list[float]], path: Path, selected: int | None = None) -> None:
    from pipeline.io import atomic_write_text

    atomic_write_text(path, ",".join(CURVE_COLUMNS) + "\n" + "".join(
        f"{int(r[0])},{r[1]:.4f},{r[2]:.4f},{int(int(r[0]) == selected)}\n" for r in rows))


def read_csv(path: str | Path) -> list[tuple[int, float, float, bool]]:
    lines = Path(path).read_text().splitlines()[1:]
    return [(int(a), float(b), float(c), d == "1") for a, b, c, d in (line.split(",") for line in lines if line)]


def copy_state(model) -> dict:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}

