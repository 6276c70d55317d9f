"""annotations: a preset's annotations, in any supported format (pipeline/core/annotation_io.py), checked
against the videos found on disk and written as one table."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.core.annotation_io import AnnotationError, read, validate, write_table

log = logging.getLogger(__name__)

def main(argv=None) -> int:
    """Read a preset's annotations, check them against the videos on disk, write the table."""
    import argparse
    import sys

    from pipeline.core.io import atomic_write_text

    ap = argparse.ArgumentParser(description=main.__doc__, fromfile_prefix_chars="@")
    ap.add_argument("--spec", required=True, help="the preset's annotations block as JSON")
    ap.add_argument("--base", default=".", help="folder the spec's paths are relative to")
    ap.add_argument("--videos-dir", required=True, help="the videos folder (for messages)")
    ap.add_argument("--found", required=True,
                    help='JSON {"present": [...], "missing": [...], "unannotated": [...]}: the videos found on disk '
                         "when the run was planned (pipeline.workflow.rules.videos)")
    ap.add_argument("--on-bad", choices=("fail", "skip"), default="fail")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="annotations: %(message)s")
    found = json.loads(args.found)
    try:
        ann = read(json.loads(args.spec), args.base)
        ann = validate(ann.restrict_to(found["present"]), args.on_bad)
    except AnnotationError as e:
        print(f"annotations: error: {e}", file=sys.stderr)
        return 1
    write_table(ann, args.out)
    out = Path(args.out)
    atomic_write_text(out / "missing_videos.txt", "".join(v + "\n" for v in found["missing"]))
    if found["unannotated"]:
        log.warning("%s: %d video file(s) match no annotated video (not processed): %s", args.videos_dir,
                    len(found["unannotated"]), ", ".join(found["unannotated"][:10]))
    atomic_write_text(out / "unannotated_videos.txt", "".join(v + "\n" for v in found["unannotated"]))
    atomic_write_text(out / "dropped.tsv", "source\treason\n" + "".join(
        f"{s.source}\t{reason}\n" for s, reason in ann.dropped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
