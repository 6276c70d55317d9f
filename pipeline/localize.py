"""localize: a trained D2-Net's TCAM -> scored action segments, in the ActivityNet results format.

Per test video, as the reference's test.py and detectionMAP.getDetections do
(docs/d2net.md, "Localization"):

1. TCAM (mean of both streams' sigmoids) and the bottom-up attention
   lambda'_t = (1 - cos(embedding_t, running background)) / 2; the TCAM is
   re-weighted by it (ActivityNet also rescales lambda' to a maximum of 2).
2. Class selection from the re-weighted TCAM's top-k means (k = floor(T / 8),
   T / 4 for ActivityNet): THUMOS keeps classes above half the best one;
   ActivityNet keeps at most two (``top2``).
3. For each kept class, proposals are the runs of at least two snippets above
   each threshold (0.025 to 0.5 in steps of 0.025 by default: the paper's
   range; the reference code stops at 0.475), scored by outer-inner contrast
   with 25% inflation on each side and dropped when the contrast is too poor.
4. Class-wise greedy NMS (IoU 0.5, the paper; the reference code uses 0.3),
   then only detections scoring at least 10% of the video's best are kept
   (the paper's S_th; ``keep_scope: class`` keeps those above 10% of their
   class's best in the video, as the reference code does).

Snippet indices become seconds with the snippet duration decode recorded.
Besides ``detections.json`` the stage writes ``scores.npz``: per video the
video-level class scores (top-k MIL pooling, as in training), the snippet
duration and the re-weighted TCAM, for evaluation and the report's timelines.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pipeline.compute.localization import infer, localize, to_results
from pipeline.core.feature_files import read_features
from pipeline.core.intervals import snippet_seconds
from pipeline.core.io import atomic_path, atomic_write_json
from pipeline.core.progress import progress_bar
from pipeline.core.settings import LocalizeSettings



def run(model_path: str, features_dir: str, decoded_dir: str, videos: list[str], s: LocalizeSettings,
        detections_out: str, scores_out: str, progress: bool = True) -> dict:
    from pipeline.compute.checkpoint import load_model

    model, classes, ts = load_model(model_path)
    results, arrays = {}, {}
    for v in progress_bar(videos, desc="localize", unit="video", enabled=progress):
        feats = read_features(Path(features_dir) / f"{v}.npy")
        if len(feats) == 0:
            continue
        stride_s, window_s = snippet_seconds(json.loads((Path(decoded_dir) / v / "meta.json").read_text()))
        tcam, scores = infer(model, feats, s, ts.topk_divisor)
        results[v] = to_results(localize(tcam, s, ts.topk_divisor), classes, stride_s, window_s)
        arrays[f"scores/{v}"] = scores.astype(np.float32)
        arrays[f"tcam/{v}"] = tcam.astype(np.float16)
        arrays[f"snippet_s/{v}"] = np.float64(stride_s)  # the grid step: snippet i starts at i * snippet_s
        arrays[f"window_s/{v}"] = np.float64(window_s)
    arrays["classes"] = np.asarray(classes)
    atomic_write_json(detections_out, {"version": "vidloc D2-Net", "results": results,
                                       "external_data": {"used": True, "details": "I3D features",
                                                         "settings": asdict(s)}})
    with atomic_path(scores_out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return results


def main(argv=None) -> int:
    from pipeline.core.annotation_io import read_table
    from pipeline.core.run_files import read_skipped

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model.pt from train")
    ap.add_argument("--features", required=True, help="folder of <video>.npy")
    ap.add_argument("--decoded", required=True, help="folder of <video>/meta.json from decode")
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--subset", required=True, help="the subset to localize (the preset's test subset)")
    ap.add_argument("--skipped", help="skipped_videos.json")
    ap.add_argument("--settings", default="{}", help="LocalizeSettings as JSON")
    ap.add_argument("--detections", required=True, help="output detections.json")
    ap.add_argument("--scores", required=True, help="output scores.npz")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skipped = read_skipped(args.skipped) if args.skipped else set()
    videos = [v for v in read_table(args.annotations).videos_in(args.subset) if v not in skipped]
    s = LocalizeSettings.from_dict(json.loads(args.settings))
    results = run(args.model, args.features, args.decoded, videos, s, args.detections, args.scores)
    n = sum(len(d) for d in results.values())
    print(f"localize: {n} detections in {len(results)} videos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
