"""curve: the learning curve, from the test-subset outputs train saved (pipeline/compute/curve_points.py),
scored with the run's localization and evaluation settings, as curve.csv."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.compute.curve_points import Scoring, curve_rows, test_spans
from pipeline.core.run_files import write_curve
from pipeline.core.settings import EvaluationSettings, LocalizeSettings, from_dict


def main(argv=None) -> int:
    from pipeline.core.annotation_io import read_table
    from pipeline.compute.checkpoint import read_checkpoint

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
    write_curve(rows, Path(args.out), selected.get("iteration"))
    print(f"curve: {len(rows)} point(s) scored", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
