"""Import precomputed features in the W-TALC single-file format into per-video feature files.

``<Dataset>-I3D-JOINTFeatures.npy`` is an object array of (T_i, 2048) float
arrays, one per entry of the annotation set's ``videoname.npy`` and in that
order ([RGB 1024 | flow 1024], one row per 16-frame snippet at 25 fps). Each
becomes ``<out>/<video>.npy`` (float32) with a ``<video>.json`` provenance
saying where it came from, so a user who already has features can start the
workflow at training. The object array is read with the restricted unpickler.
Empty entries (W-TALC has some for ActivityNet) are written as (0, 2048).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.core.feature_files import FEATURE_DIM
from pipeline.core.io import atomic_path, atomic_write_json
from pipeline.core.safeload import load_npy, load_npy_strings


def import_wtalc(features_file: str | Path, videoname_file: str | Path, out_dir: str | Path,
                 videos: set[str] | None = None) -> list[str]:
    """Write one .npy and .json per video; returns the names written. ``videos`` limits which."""
    features_file, out_dir = Path(features_file), Path(out_dir)
    feats = load_npy(features_file)
    names = load_npy_strings(videoname_file)
    if len(feats) != len(names):
        raise ValueError(f"{features_file}: {len(feats)} feature arrays but {videoname_file} names {len(names)} videos")
    written = []
    for i, (name, f) in enumerate(zip(names, feats)):
        if videos is not None and name not in videos:
            continue
        f = np.asarray(f, dtype=np.float32)
        if f.size == 0:
            f = np.zeros((0, FEATURE_DIM), np.float32)
        if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
            raise ValueError(f"{features_file}[{i}] ({name}): shape {f.shape}, expected (T, {FEATURE_DIM})")
        if not np.isfinite(f).all():
            raise ValueError(f"{features_file}[{i}] ({name}): non-finite values")
        with atomic_path(out_dir / f"{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, f)
        atomic_write_json(out_dir / f"{name}.json", {
            "video": name, "status": "ok", "n_snippets": len(f),
            "provenance": f"imported from {features_file.name} (W-TALC format); weights as its authors extracted",
            "source": str(features_file), "index": i})
        written.append(name)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("features", help="<Dataset>-I3D-JOINTFeatures.npy")
    ap.add_argument("--videoname", required=True, help="the annotation set's videoname.npy")
    ap.add_argument("--out", required=True, help="folder for <video>.npy / <video>.json")
    args = ap.parse_args(argv)
    names = import_wtalc(args.features, args.videoname, args.out)
    print(f"imported {len(names)} videos into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
