"""The small files one stage writes and others read, each with its reader (and writer, where a stage and a
test both write it): scores.npz (localize), skipped_videos.json (skipped), the feature index (feature_index),
past_end.tsv (durations), curve.csv (curve); and the hours costs.json's tables show."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from pipeline.core.annotation_io import Segment
from pipeline.core.intervals import snippet_centres, snippet_span
from pipeline.core.io import atomic_write_text

# --------------------------------------------------------------- scores.npz


def read_scores(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(video -> video-level scores, video -> snippet seconds) from scores.npz."""
    with np.load(path, allow_pickle=False) as z:
        scores = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("scores/")}
        snippet_s = {k.split("/", 1)[1]: float(z[k]) for k in z.files if k.startswith("snippet_s/")}
    return scores, snippet_s


def read_lengths_s(path: str | Path) -> dict[str, float]:
    """video -> seconds covered by its snippets, from scores.npz."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            if k.startswith("tcam/"):
                v = k.split("/", 1)[1]
                step = float(z[f"snippet_s/{v}"])
                window = float(z[f"window_s/{v}"]) if f"window_s/{v}" in z.files else step
                out[v] = float(snippet_span(0, len(z[k]), step, window)[1])
    return out


def read_tcams(path: str | Path, videos) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(classes, video -> re-weighted TCAM (T, C), video -> snippet centres in seconds (T,)) for the given videos."""
    tcams, centres = {}, {}
    with np.load(path, allow_pickle=False) as z:
        for v in videos:
            if f"tcam/{v}" in z.files:
                tcams[v] = z[f"tcam/{v}"].astype(np.float32)
                step = float(z[f"snippet_s/{v}"])
                window = float(z[f"window_s/{v}"]) if f"window_s/{v}" in z.files else step
                centres[v] = snippet_centres(len(tcams[v]), step, window)
        return [str(c) for c in z["classes"]], tcams, centres


# ------------------------------------------------------ skipped_videos.json


def read_skipped(path: str | Path) -> set[str]:
    """Names of the skipped videos, for later stages to leave out."""
    return {s["video"] for s in json.loads(Path(path).read_text())["skipped"]}


# ------------------------------------------------------- features/index.tsv

INDEX_COLUMNS = ("video", "status", "n_snippets", "fps", "snippet_frames", "snippet_stride", "duration_s", "reason")


def index_tsv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, INDEX_COLUMNS, delimiter="\t", lineterminator="\n")
    w.writeheader()
    for r in table:
        w.writerow({k: "" if r[k] is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in INDEX_COLUMNS})
    return buf.getvalue()


def read_index(path: str | Path) -> list[dict]:
    """index.tsv back as dicts with numbers parsed (empty cells: None)."""
    def num(x, kind):
        return kind(x) if x != "" else None

    with open(path, newline="") as f:
        return [{**r, "n_snippets": int(r["n_snippets"]), "fps": num(r["fps"], float),
                 "snippet_frames": num(r["snippet_frames"], int), "snippet_stride": num(r["snippet_stride"], int),
                 "duration_s": num(r["duration_s"], float)}
                for r in csv.DictReader(f, delimiter="\t")]


# ------------------------------------------------------------ past_end.tsv

PAST_END_COLUMNS = ("source", "video", "subset", "label", "start_s", "end_s", "decoded_duration_s", "action")


def past_end_tsv(rows: list[tuple[Segment, float, str]]) -> str:
    lines = ["\t".join(PAST_END_COLUMNS)]
    lines += ["\t".join([s.source, s.video, s.subset, s.label, f"{s.start_s:g}", f"{s.end_s:g}", f"{d:.3f}", action])
              for s, d, action in rows]
    return "\n".join(lines) + "\n"


def read_past_end(folder: str | Path) -> list[dict]:
    """The rows of ``past_end.tsv`` (an empty list when the file is absent: a table made before it existed)."""
    path = Path(folder) / "past_end.tsv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# --------------------------------------------------------------- curve.csv

# selected: 1 on the point whose weights became model.pt (select_on_test only)
CURVE_COLUMNS = ("iteration", "map_at_0.5", "average_map", "selected")


def write_curve(rows: list[list[float]], path: Path, selected: int | None = None) -> None:
    atomic_write_text(path, ",".join(CURVE_COLUMNS) + "\n" + "".join(
        f"{int(r[0])},{r[1]:.4f},{r[2]:.4f},{int(int(r[0]) == selected)}\n" for r in rows))


def read_curve(path: str | Path) -> list[tuple[int, float, float, bool]]:
    lines = Path(path).read_text().splitlines()[1:]
    return [(int(a), float(b), float(c), d == "1") for a, b, c, d in (line.split(",") for line in lines if line)]


# -------------------------------------------------------------- costs.json


def hours(s: float) -> str:
    """Seconds as the cost tables show them."""
    return f"{s / 3600:.1f} h" if s >= 360 else f"{s / 60:.1f} min"
