"""evaluate: a run's detections scored against the annotations (pipeline/core/metrics.py: the two
protocols), with the chance level and the classes the training subset lacks, as metrics.json."""
from __future__ import annotations

import argparse
import sys

from pipeline.core.io import atomic_write_json
from pipeline.core.metrics import PROTOCOLS, chance_level, evaluate, load_detections, unlearnable_classes


def main(argv=None) -> int:
    from pipeline.core.annotation_io import read_table
    from pipeline.core.run_files import read_lengths_s, read_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("detections", help="detections.json (ActivityNet results format)")
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--subset", required=True)
    ap.add_argument("--tiou", required=True, help="comma-separated tIoU thresholds")
    ap.add_argument("--protocol", default="activitynet", choices=PROTOCOLS)
    ap.add_argument("--scores", help="scores.npz from localize: video-level scores and snippet durations")
    ap.add_argument("--train-subset", help="the subset the model trained on: test classes it lacks are named")
    ap.add_argument("--out", required=True, help="metrics.json")
    args = ap.parse_args(argv)
    ann = read_table(args.annotations)
    video_scores, snippet_s = read_scores(args.scores) if args.scores else (None, None)
    results = load_detections(args.detections)
    thresholds = [float(t) for t in args.tiou.split(",")]
    metrics = evaluate(results, ann, args.subset, thresholds, args.protocol, snippet_s, video_scores,
                       source=args.detections)
    if args.train_subset:
        metrics["classes_without_training_videos"] = unlearnable_classes(ann, args.train_subset, args.subset)
    if args.scores:
        metrics["chance"] = chance_level(results, ann, args.subset, thresholds, args.protocol,
                                         read_lengths_s(args.scores), snippet_s)
    atomic_write_json(args.out, metrics)
    print(f"{args.detections}: mAP {metrics['map']} average {metrics['average_map']:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
