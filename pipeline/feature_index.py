"""feature_index: one row per video of what features/ holds, from the features' provenance files.

``index.tsv`` columns: video, status (ok | skipped), n_snippets, fps,
snippet_frames, snippet_stride, duration_s (the source video's), reason (why
a video was skipped: unreadable, corrupt, too short). The row order is the
video order of the W-TALC export. Skipped videos are printed too, so a run on
a folder of one's own videos ends with what it could not use.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.core.io import atomic_write_text
from pipeline.core.run_files import index_tsv


def rows(provenance_paths) -> list[dict]:
    out = []
    for path in provenance_paths:
        p = json.loads(Path(path).read_text())
        out.append({"video": Path(path).stem, "status": p.get("status", ""), "n_snippets": p.get("n_snippets", 0),
                    "fps": p.get("fps"), "snippet_frames": p.get("snippet_frames"),
                    "snippet_stride": p.get("snippet_stride"), "duration_s": p.get("source_duration_s"),
                    "reason": p.get("reason", "")})
    return sorted(out, key=lambda r: r["video"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("provenance", nargs="*", help="features/<video>.json files")
    ap.add_argument("--out", required=True, help="output index.tsv")
    args = ap.parse_args(argv)
    table = rows(args.provenance)
    atomic_write_text(args.out, index_tsv(table))
    bad = [r for r in table if r["status"] != "ok"]
    for r in bad:
        print(f"skipped {r['video']}: {r['reason']}", file=sys.stderr)
    print(f"feature_index: {len(table) - len(bad)} videos with features, {len(bad)} skipped -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
