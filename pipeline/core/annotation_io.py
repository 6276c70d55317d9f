"""Temporal annotations from every supported format into one table.

Formats: THUMOS14 per-class txt files, ActivityNet json (``database``
layout, v1.2/v1.3), the W-TALC ``*-Annotations/*.npy`` set and a plain CSV
(``video,subset,label,start,end[,duration]``). Each reader returns an
``Annotations``: the segments that evaluation scores, the THUMOS "Ambiguous"
segments kept apart (evaluation ignores detections on them), the class list
and every video with its subset and, where the format records it, duration.

Bad rows (unknown label, start >= end, a segment past the video's duration)
raise ``AnnotationError`` naming the file and line, or are dropped with a
warning under ``on_bad="skip"``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)

AMBIGUOUS = "Ambiguous"
TABLE_COLUMNS = ("video", "subset", "label", "start_s", "end_s", "duration", "source")
# Annotations are written with 0.1 s precision while durations come from
# container metadata; a segment may overshoot the duration by this much.
DURATION_TOLERANCE_S = 0.5


class AnnotationError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    video: str
    subset: str
    label: str
    start_s: float
    end_s: float
    duration: float = math.nan  # the video's duration; nan when the format has none
    source: str = ""  # "file:line", for error messages


@dataclass
class Annotations:
    classes: list[str]
    segments: list[Segment]
    ambiguous: list[Segment] = field(default_factory=list)
    # video -> (subset, duration); includes videos whose only segments are ambiguous
    videos: dict[str, tuple[str, float]] = field(default_factory=dict)
    source: str = ""
    # (segment, reason) for rows that validate() dropped under on_bad="skip"
    dropped: list[tuple[Segment, str]] = field(default_factory=list)
    # video -> the other name its file may carry (ActivityNet: the YouTube id); see pipeline/core/videos.py
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for s in self.segments + self.ambiguous:
            if s.video not in self.videos:
                self.videos[s.video] = (s.subset, s.duration)

    def videos_in(self, subset: str) -> list[str]:
        return sorted(v for v, (sub, _) in self.videos.items() if sub == subset)

    def labels_of(self, video: str) -> list[str]:
        return sorted({s.label for s in self.segments if s.video == video})

    def restrict_to(self, videos) -> "Annotations":
        keep = set(videos)
        return Annotations(
            classes=list(self.classes),
            segments=[s for s in self.segments if s.video in keep],
            ambiguous=[s for s in self.ambiguous if s.video in keep],
            videos={v: info for v, info in self.videos.items() if v in keep},
            source=self.source,
            aliases={v: a for v, a in self.aliases.items() if v in keep},
        )


# ---------------------------------------------------------------- validation


def validate(ann: Annotations, on_bad: str = "fail") -> Annotations:
    """Check every segment; raise on the first bad one, or drop bad ones with a warning."""
    if on_bad not in ("fail", "skip"):
        raise ValueError(f"on_bad must be 'fail' or 'skip', not {on_bad!r}")
    known = set(ann.classes)

    def problem(s: Segment, check_label: bool) -> str | None:
        if check_label and s.label not in known:
            return f"unknown label {s.label!r} (known: {', '.join(ann.classes)})"
        if not (math.isfinite(s.start_s) and math.isfinite(s.end_s)):
            return f"non-numeric segment [{s.start_s}, {s.end_s}]"
        if s.start_s < 0:
            return f"negative start {s.start_s:g} s"
        if s.start_s >= s.end_s:
            return f"start {s.start_s:g} s is not before end {s.end_s:g} s"
        if math.isfinite(s.duration) and s.end_s > s.duration + DURATION_TOLERANCE_S:
            return f"segment [{s.start_s:g}, {s.end_s:g}] s ends past the video's duration {s.duration:g} s"
        return None

    dropped = list(ann.dropped)

    def keep(segs: list[Segment], check_label: bool) -> list[Segment]:
        out, seen = [], {}
        for s in segs:
            msg = problem(s, check_label)
            key = (s.video, s.label, s.start_s, s.end_s)
            if msg is None and key in seen:  # would count twice in training labels and evaluation
                msg = f"duplicate of {seen[key]}"
            seen.setdefault(key, s.source or "an earlier line")
            if msg is None:
                out.append(s)
                continue
            msg = f"{s.source or ann.source}: video {s.video}: {msg}"
            if on_bad == "fail":
                raise AnnotationError(msg)
            log.warning("skipping annotation: %s", msg)
            dropped.append((s, msg))
        return out

    return Annotations(
        classes=list(ann.classes),
        segments=keep(ann.segments, True),
        ambiguous=keep(ann.ambiguous, False),
        videos=dict(ann.videos),
        source=ann.source,
        dropped=dropped,
        aliases=dict(ann.aliases),
    )


def select_videos(ann: Annotations, available, on_missing: str = "skip") -> tuple[list[str], list[str]]:
    """Split annotated videos into (present, missing) given the videos found on disk."""
    if on_missing not in ("fail", "skip"):
        raise ValueError(f"on_missing must be 'fail' or 'skip', not {on_missing!r}")
    available = set(available)
    present = sorted(v for v in ann.videos if v in available)
    missing = sorted(v for v in ann.videos if v not in available)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        msg = f"{ann.source}: {len(missing)} annotated video(s) not found on disk: {shown}"
        if on_missing == "fail":
            raise AnnotationError(msg)
        log.warning("%s (skipped)", msg)
    return present, missing


def locate_videos(ann: Annotations, folder, extensions, on_missing: str = "skip"):
    """The annotated videos' files in ``folder`` (pipeline/core/videos.py pairs names, YouTube ids and files):
    a ``videos.Match`` whose ``paths`` hold the present videos; missing ones are skipped or stop the run per
    ``on_missing``."""
    from pipeline.core.videos import find_videos, match

    found = match(ann.videos, find_videos(folder, extensions), ann.aliases)
    select_videos(ann, found.paths, on_missing)
    return found


def with_durations(ann: Annotations, durations: dict[str, float]) -> Annotations:
    """Fill in durations measured elsewhere (e.g. by decode) for formats that lack them."""

    def fill(s: Segment) -> Segment:
        d = durations.get(s.video)
        return replace(s, duration=d) if d is not None and not math.isfinite(s.duration) else s

    videos = {
        v: (sub, durations.get(v, d) if not math.isfinite(d) else d) for v, (sub, d) in ann.videos.items()
    }
    return Annotations(ann.classes, [fill(s) for s in ann.segments], [fill(s) for s in ann.ambiguous],
                       videos, ann.source, aliases=dict(ann.aliases))


# ------------------------------------------------------------------- readers


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{where}: {text!r} is not a number") from None


def read_thumos14_txt(split_dirs: dict[str, str | os.PathLike], classes: list[str] | None = None) -> Annotations:
    """Read ``<Class>_{val,test}.txt`` files; ``split_dirs`` maps subset name -> folder.

    Classes are the file names' class part (alphabetical) unless given.
    Lines are ``video_validation_0000266  72.8 76.4``.
    """
    segments, ambiguous, found = [], [], set()
    sources = []
    for subset, folder in split_dirs.items():
        folder = Path(folder)
        if not folder.is_dir():
            raise AnnotationError(f"{folder}: THUMOS14 annotation folder not found")
        sources.append(str(folder))
        files = sorted(p for p in folder.glob("*_*.txt"))
        if not files:
            raise AnnotationError(f"{folder}: no <Class>_<split>.txt annotation files")
        for path in files:
            label = path.stem.rsplit("_", 1)[0]
            target = ambiguous if label == AMBIGUOUS else segments
            if label != AMBIGUOUS:
                found.add(label)
            for lineno, line in enumerate(read_text(path).splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                parts = line.split()
                if len(parts) != 3:
                    raise AnnotationError(f"{where}: expected 'video start end', got {line.strip()!r}")
                target.append(Segment(parts[0], subset, label, _float(parts[1], where),
                                      _float(parts[2], where), source=where))
    return Annotations(list(classes) if classes else sorted(found), segments, ambiguous,
                       source=", ".join(sources))


def read_activitynet_json(path: str | os.PathLike, classes: list[str] | None = None) -> Annotations:
    """Read the ActivityNet ``{"database": {id: {subset, duration, annotations}}}`` layout."""
    path = Path(path)
    try:
        data = json.loads(read_text(path))
        database = data["database"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnnotationError(f"{path}: not an ActivityNet annotation json ({e!r})") from None
    segments, videos = [], {}
    for vid, entry in database.items():
        where = f"{path}: database[{vid!r}]"
        subset = entry.get("subset", "")
        duration = float(entry.get("duration", math.nan))
        videos[vid] = (subset, duration)
        for i, a in enumerate(entry.get("annotations", [])):
            try:
                (start, end), label = a["segment"], a["label"]
            except (KeyError, ValueError, TypeError):
                raise AnnotationError(f"{where}.annotations[{i}]: needs 'segment': [start, end] and 'label'") from None
            segments.append(Segment(vid, subset, label, float(start), float(end), duration,
                                    source=f"{where}.annotations[{i}]"))
    if classes is None:
        classes = sorted({s.label for s in segments})
    return Annotations(list(classes), segments, [], videos, source=str(path))


def youtube_id(url: str) -> str:
    """``https://www.youtube.com/watch?v=<id>`` -> ``<id>`` (ids may start with ``-``)."""
    from urllib.parse import parse_qs, urlparse

    ids = parse_qs(urlparse(url).query).get("v")
    if not ids:
        raise AnnotationError(f"{url!r} is not a YouTube watch URL")
    return ids[0]


def read_wtalc_npy(folder: str | os.PathLike) -> Annotations:
    """Read a W-TALC ``*-Annotations/`` folder (classlist, videoname, subset, duration, segments, labels).

    ``Ambiguous_test.txt``, where present, becomes the ambiguous segments of the test subset;
    ``url.npy`` (ActivityNet) gives each video's YouTube id, the name its downloaded file carries.
    """
    from pipeline.core.safeload import as_str, load_npy, load_npy_strings

    folder = Path(folder)
    try:
        classes = load_npy_strings(folder / "classlist.npy")
        names = load_npy_strings(folder / "videoname.npy")
        subsets = load_npy_strings(folder / "subset.npy")
        durations = load_npy(folder / "duration.npy").reshape(len(names), -1)[:, 0]
        all_segments = load_npy(folder / "segments.npy")
        all_labels = load_npy(folder / "labels.npy")
    except FileNotFoundError as e:
        raise AnnotationError(f"{folder}: missing W-TALC annotation file {Path(e.filename).name}") from None
    if not (len(names) == len(subsets) == len(durations) == len(all_segments) == len(all_labels)):
        raise AnnotationError(f"{folder}: videoname, subset, duration, segments and labels differ in length")
    segments, videos = [], {}
    for i, (vid, subset, dur) in enumerate(zip(names, subsets, durations)):
        videos[vid] = (subset, float(dur))
        segs, labs = list(all_segments[i]), list(all_labels[i])
        if len(segs) != len(labs):
            raise AnnotationError(f"{folder}/segments.npy[{i}] ({vid}): {len(segs)} segments but {len(labs)} labels")
        for j, ((start, end), label) in enumerate(zip(segs, labs)):
            segments.append(Segment(vid, subset, as_str(label), float(start), float(end), float(dur),
                                    source=f"{folder}/segments.npy[{i}][{j}]"))
    aliases = {}
    if (folder / "url.npy").exists():
        urls = load_npy_strings(folder / "url.npy")
        if len(urls) != len(names):
            raise AnnotationError(f"{folder}/url.npy: {len(urls)} URLs for {len(names)} videos")
        aliases = {vid: youtube_id(u) for vid, u in zip(names, urls)}
    ambiguous = []
    amb_file = folder / "Ambiguous_test.txt"
    if amb_file.exists():
        test_dur = {v: d for v, (s, d) in videos.items() if s == "test"}
        for lineno, line in enumerate(read_text(amb_file).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{amb_file}:{lineno}"
            if len(parts) != 3:
                raise AnnotationError(f"{where}: expected 'video start end', got {line.strip()!r}")
            ambiguous.append(Segment(parts[0], "test", AMBIGUOUS, _float(parts[1], where), _float(parts[2], where),
                                     test_dur.get(parts[0], math.nan), source=where))
    # Ambiguous segments of videos outside the set (W-TALC dropped some) do not add videos.
    ambiguous = [s for s in ambiguous if s.video in videos]
    return Annotations(classes, segments, ambiguous, videos, source=str(folder), aliases=aliases)


def read_text(path: Path) -> str:
    """A text file as researchers' files come: UTF-8, with or without the byte-order mark Excel and
    Windows editors put first (it would otherwise join the first name)."""
    return path.read_text(encoding="utf-8-sig")


def read_csv(path: str | os.PathLike, classes: list[str] | None = None) -> Annotations:
    """Read ``video,subset,label,start,end[,duration]``; a label ``Ambiguous`` marks an ignored segment.

    Every field is stripped of surrounding whitespace; a tab or line break inside one (it would shift the
    columns of the tab-separated table later stages read) is an error naming the file and line."""
    path = Path(path)
    required = {"video", "subset", "label", "start", "end"}
    segments, ambiguous = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if not required <= set(header):
            raise AnnotationError(f"{path}: header must contain {sorted(required)}, got {sorted(header)}")
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not any(x.strip() for x in fields):
                continue
            row = {k: v.strip() for k, v in zip(header, fields)}
            bad = [k for k, v in row.items() if "\t" in v or "\n" in v or "\r" in v]
            if bad:
                raise AnnotationError(f"{where}: a tab or line break inside the {bad[0]} field {row[bad[0]]!r}")
            if not required <= set(row):
                raise AnnotationError(f"{where}: expected {len(header)} fields, got {len(fields)}")
            dur = row.get("duration") or ""
            seg = Segment(row["video"], row["subset"], row["label"], _float(row["start"], where),
                          _float(row["end"], where), _float(dur, where) if dur else math.nan, where)
            (ambiguous if seg.label == AMBIGUOUS else segments).append(seg)
    if classes is None:
        classes = sorted({s.label for s in segments})
    return Annotations(list(classes), segments, ambiguous, source=str(path))


def read_classes(path: str | os.PathLike) -> list[str]:
    """A class list: one name per line (txt) or a W-TALC ``classlist.npy``."""
    path = Path(path)
    if path.suffix == ".npy":
        from pipeline.core.safeload import load_npy_strings

        return load_npy_strings(path)
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def official(spec: dict, base: str | os.PathLike = ".") -> Path | None:
    """The official ActivityNet json a preset names as ``official:``, when the user has it: read instead."""
    path = spec.get("official")
    return Path(base) / path if path and (Path(base) / path).is_file() else None


def read(spec: dict, base: str | os.PathLike = ".") -> Annotations:
    """Read annotations as a preset's ``annotations`` block describes them."""
    base = Path(base)
    fmt = spec["format"]
    if official(spec, base) is not None:
        spec, fmt = {"classes": spec.get("classes"), "path": spec["official"]}, "activitynet_json"
    classes = read_classes(base / spec["classes"]) if spec.get("classes") else None
    if fmt == "thumos14_txt":
        return read_thumos14_txt({sub: base / d for sub, d in spec["dirs"].items()}, classes)
    if fmt == "activitynet_json":
        return read_activitynet_json(base / spec["path"], classes)
    if fmt == "wtalc_npy":
        ann = read_wtalc_npy(base / spec["path"])
        return ann if classes is None else replace(ann, classes=classes)
    if fmt == "csv":
        return read_csv(base / spec["path"], classes)
    raise AnnotationError(f"unknown annotation format {fmt!r}")


def source_files(spec: dict, base: str | os.PathLike = ".") -> list[str]:
    """Files a preset's annotations are read from, so the workflow can rerun when they change."""
    base = Path(base)
    paths = [base / spec["classes"]] if spec.get("classes") else []
    if official(spec, base) is not None:
        return [str(p) for p in paths + [official(spec, base)]]
    if spec["format"] == "thumos14_txt":
        for d in spec["dirs"].values():
            paths += sorted((base / d).glob("*_*.txt"))
    elif spec["format"] == "wtalc_npy":
        paths += sorted((base / spec["path"]).glob("*.npy")) + sorted((base / spec["path"]).glob("*.txt"))
    else:
        paths.append(base / spec["path"])
    return [str(p) for p in paths]


# --------------------------------------------------------------- the table


def write_table(ann: Annotations, out_dir: str | os.PathLike) -> None:
    """Write annotations.tsv, ambiguous.tsv, videos.tsv and classes.txt atomically."""
    from pipeline.core.io import atomic_write_text

    out = Path(out_dir)

    def tsv(rows, columns):
        lines = ["\t".join(columns)]
        lines += ["\t".join(_fmt(x) for x in r) for r in rows]
        return "\n".join(lines) + "\n"

    seg_rows = lambda segs: [(s.video, s.subset, s.label, s.start_s, s.end_s, s.duration, s.source) for s in segs]
    atomic_write_text(out / "annotations.tsv", tsv(seg_rows(ann.segments), TABLE_COLUMNS))
    atomic_write_text(out / "ambiguous.tsv", tsv(seg_rows(ann.ambiguous), TABLE_COLUMNS))
    video_rows = [(v, s, d, ann.aliases.get(v, "")) for v, (s, d) in sorted(ann.videos.items())]
    atomic_write_text(out / "videos.tsv", tsv(video_rows, ("video", "subset", "duration", "alias")))
    atomic_write_text(out / "classes.txt", "".join(c + "\n" for c in ann.classes))


def read_table(folder: str | os.PathLike) -> Annotations:
    """Read back what ``write_table`` wrote."""
    folder = Path(folder)

    def rows(name):
        with open(folder / name, newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))

    def segs(name):
        return [Segment(r["video"], r["subset"], r["label"], float(r["start_s"]), float(r["end_s"]),
                        float(r["duration"]), source=r.get("source") or f"{folder / name}") for r in rows(name)]

    video_rows = rows("videos.tsv")
    videos = {r["video"]: (r["subset"], float(r["duration"])) for r in video_rows}
    aliases = {r["video"]: r["alias"] for r in video_rows if r.get("alias")}  # ActivityNet: YouTube ids
    return Annotations(read_classes(folder / "classes.txt"), segs("annotations.tsv"), segs("ambiguous.tsv"),
                       videos, source=str(folder), aliases=aliases)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else repr(x)
    return str(x)
