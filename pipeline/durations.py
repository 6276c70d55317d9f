"""The annotation table checked against the decoded videos' own durations.

The first stage that knows every video's length: THUMOS14's txt files and CSVs without a duration
column say nothing of it, and a file's duration may differ from the video a user downloaded. A
segment that ends past its decoded video (beyond ``annotations.DURATION_TOLERANCE_S``) is, by
``segments_past_end``:
- ``bad``: a bad annotation, handled by ``on_bad_annotation`` (fail names the file, line and video;
  skip drops it);
- ``keep``: kept as ground truth, as the official evaluations do (it can only be missed).
Either way each such segment is listed in ``past_end.tsv`` and the report counts them per video.
The checked table (the same four files as the annotation stage's, durations filled in from decode
where the format had none) is what training, localization, evaluation, the report and exports read.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.core.annotation_io import (DURATION_TOLERANCE_S, AnnotationError, Annotations, Segment, read_table,
                                  with_durations, write_table)
from pipeline.core.io import atomic_write_text
from pipeline.core.run_files import past_end_tsv

log = logging.getLogger("durations")

POLICIES = ("bad", "keep")


def decoded_durations(meta_paths) -> dict[str, float]:
    """video -> duration of its source stream in seconds, for every video decode could read."""
    out = {}
    for path in meta_paths:
        meta = json.loads(Path(path).read_text())
        if meta.get("status") == "ok" and meta.get("source_duration_s"):
            out[meta["video"]] = float(meta["source_duration_s"])
    return out


def past_end(s: Segment, durations: dict[str, float]) -> bool:
    d = durations.get(s.video)
    return d is not None and s.end_s > d + DURATION_TOLERANCE_S


def check(ann: Annotations, durations: dict[str, float], policy: str = "bad",
          on_bad: str = "fail") -> tuple[Annotations, list[tuple[Segment, float, str]]]:
    """(the table with decoded durations filled in, [(segment, decoded duration, "kept" | "dropped")]).

    Raises AnnotationError naming the file, line and video on the first segment past its video's end
    when ``policy`` is ``bad`` and ``on_bad`` is ``fail``."""
    if policy not in POLICIES:
        raise ValueError(f"segments_past_end must be one of {POLICIES}, not {policy!r}")
    if on_bad not in ("fail", "skip"):
        raise ValueError(f"on_bad must be 'fail' or 'skip', not {on_bad!r}")
    listed = []

    def keep(segs: list[Segment]) -> list[Segment]:
        out = []
        for s in segs:
            if not past_end(s, durations):
                out.append(s)
                continue
            d = durations[s.video]
            if policy == "keep":
                listed.append((s, d, "kept"))
                out.append(s)
                continue
            msg = (f"{s.source or ann.source}: video {s.video}: segment [{s.start_s:g}, {s.end_s:g}] s ends past "
                   f"the decoded video's end at {d:.2f} s")
            if on_bad == "fail":
                raise AnnotationError(msg + " (segments_past_end: keep keeps such segments as ground truth, "
                                            "on_bad_annotation: skip drops them)")
            log.warning("dropping annotation: %s", msg)
            listed.append((s, d, "dropped"))
        return out

    checked = with_durations(ann, durations)
    return replace(checked, segments=keep(checked.segments), ambiguous=keep(checked.ambiguous),
                   dropped=[]), listed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("metas", nargs="*", help="decode meta.json files")
    ap.add_argument("--annotations", required=True, help="the annotation stage's folder")
    ap.add_argument("--past-end", choices=POLICIES, default="bad")
    ap.add_argument("--on-bad", choices=("fail", "skip"), default="fail")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="durations: %(message)s")
    try:
        ann, listed = check(read_table(args.annotations), decoded_durations(args.metas), args.past_end, args.on_bad)
    except AnnotationError as e:
        print(f"durations: error: {e}", file=sys.stderr)
        return 1
    if listed and args.past_end == "keep":
        videos = sorted({s.video for s, _, _ in listed})
        log.warning("%d segment(s) of %d video(s) end past the decoded video (kept as ground truth; listed in "
                    "past_end.tsv): %s", len(listed), len(videos), ", ".join(videos[:10]))
    write_table(ann, args.out)
    atomic_write_text(Path(args.out) / "past_end.tsv", past_end_tsv(listed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
