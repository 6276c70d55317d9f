"""The skipped-videos list: every video the run could not use, and why.

Collected from the annotation stage (annotated but missing on disk) and the
decode stage (bad videos under ``on_bad_video: skip``); later stages leave
these videos out and the report lists them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.core.io import atomic_write_json


def collect(meta_paths, missing_file: str | None = None) -> list[dict]:
    skipped = []
    if missing_file:
        for video in Path(missing_file).read_text().split("\n"):
            if video:
                skipped.append({"video": video, "stage": "annotations",
                                "reason": "annotated but not found in the videos folder"})
    for path in meta_paths:
        meta = json.loads(Path(path).read_text())
        if meta.get("status") != "ok":
            skipped.append({"video": meta["video"], "stage": "decode", "reason": meta.get("reason", "")})
    return sorted(skipped, key=lambda s: s["video"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("metas", nargs="*", help="decode meta.json files")
    ap.add_argument("--missing", help="missing_videos.txt from the annotation stage")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    skipped = collect(args.metas, args.missing)
    atomic_write_json(args.out, {"skipped": skipped, "n_videos": len(args.metas)})
    for s in skipped:
        print(f"skipped {s['video']} ({s['stage']}): {s['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
