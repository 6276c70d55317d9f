"""Segments past their video's end, checked against the decoded durations (THUMOS txt and CSV have none)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import durations as D
from pipeline.core.annotation_io import AnnotationError, Annotations, Segment
from pipeline.demo_data import write_video
from pipeline.report import past_end_note
from conftest import REPO
from test_workflow import QUICK_FLOW, snakemake


def seg(video, start, end, line):
    return Segment(video, "test", "Jump", start, end, source=f"Jump_test.txt:{line}")


def test_check_by_policy():
    ann = Annotations(["Jump"], [seg("a", 1, 2, 1), seg("a", 3, 4.4, 2), seg("b", 9, 12, 3)], [seg("b", 20, 21, 4)])
    durations = {"a": 4.0, "b": 10.0}  # a's 4.4 is within the 0.5 s tolerance
    with pytest.raises(AnnotationError, match=r"^Jump_test.txt:3: video b: segment \[9, 12\] s ends past the "
                                              r"decoded video's end at 10.00 s"):
        D.check(ann, durations, "bad", "fail")
    checked, listed = D.check(ann, durations, "bad", "skip")
    assert [s.source for s in checked.segments] == ["Jump_test.txt:1", "Jump_test.txt:2"] and not checked.ambiguous
    assert [(s.source, d, a) for s, d, a in listed] == [("Jump_test.txt:3", 10.0, "dropped"),
                                                        ("Jump_test.txt:4", 10.0, "dropped")]
    assert checked.videos == {"a": ("test", 4.0), "b": ("test", 10.0)}  # durations filled in from decode
    checked, listed = D.check(ann, durations, "keep", "fail")
    assert len(checked.segments) == 3 and [a for _, _, a in listed] == ["kept", "kept"]


def test_report_counts_them_per_video():
    rows = [{"subset": "test", "video": "v1", "action": "kept"}] * 2 + [{"subset": "test", "video": "v2",
                                                                         "action": "kept"},
                                                                        {"subset": "validation", "video": "v3",
                                                                         "action": "kept"}]
    note = past_end_note(rows, "test")
    assert note.startswith("3 ground-truth segment(s) on 2 test video(s) end past the decoded video: 3 kept")
    assert note.endswith("v1 (2), v2 (1).")
    assert past_end_note(rows, "other") is None


def small_run(tmp_path, fmt: str) -> dict:
    """Three real 1.6 s videos; one annotated segment of 'late' starts at 5 s."""
    videos = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for name in ("early", "late", "mid"):
        write_video(videos / f"{name}.mp4", [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(40)],
                    25)
    rows = [("early", "validation", 0.2, 1.0), ("mid", "validation", 0.3, 1.5), ("late", "test", 0.2, 1.0),
            ("late", "test", 5.0, 6.0)]
    if fmt == "csv":
        path = tmp_path / "ann.csv"
        path.write_text("video,subset,label,start,end\n" + "".join(f"{v},{s},Jump,{a},{b}\n" for v, s, a, b in rows))
        spec, where = {"format": "csv", "path": str(path)}, f"{path}:5"
    else:
        for sub, suffix in (("validation", "val"), ("test", "test")):
            (tmp_path / sub).mkdir()
            (tmp_path / sub / f"Jump_{suffix}.txt").write_text(
                "".join(f"{v}  {a} {b}\n" for v, s, a, b in rows if s == sub))
        spec = {"format": "thumos14_txt", "dirs": {"validation": str(tmp_path / "validation"),
                                                   "test": str(tmp_path / "test")}}
        where = f"{tmp_path / 'test' / 'Jump_test.txt'}:2"
    config = {"preset": "mine", **QUICK_FLOW, "presets": {"mine": {
        "videos": str(videos), "annotations": spec, "train_subset": "validation", "test_subset": "test",
        "decode": {"short_side": 64, "crop": 48}, "evaluation": {"tiou_thresholds": [0.5]}}}}
    return config, where


def table(folder: Path, name="annotations.tsv") -> list[dict]:
    with open(folder / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("fmt", ["thumos14_txt", "csv"])
def test_a_segment_past_the_decoded_end_stops_the_run_naming_file_line_and_video(tmp_path, fmt):
    config, where = small_run(tmp_path, fmt)
    rc, out = snakemake(tmp_path, config, "--until", "durations", check=False)
    assert rc != 0
    assert (f"durations: error: {where}: video late: segment [5, 6] s ends past the decoded video's end at 1.60 s"
            in out), out[-3000:]
    # what was computed stays
    assert (tmp_path / "results" / "mine" / "decoded" / "late" / "meta.json").exists()


def test_dropped_or_kept_and_listed(tmp_path):
    config, where = small_run(tmp_path, "thumos14_txt")
    config["on_bad_annotation"] = "skip"
    snakemake(tmp_path, config, "--until", "durations")
    checked = tmp_path / "results" / "mine" / "annotations" / "decoded"
    assert [(r["video"], r["start_s"]) for r in table(checked) if r["video"] == "late"] == [("late", "0.2")]
    assert [(r["source"], r["action"], r["decoded_duration_s"]) for r in table(checked, "past_end.tsv")] == [
        (where, "dropped", "1.600")]
    videos = {r["video"]: float(r["duration"]) for r in table(checked, "videos.tsv")}
    assert videos == pytest.approx({"early": 1.6, "late": 1.6, "mid": 1.6})

    config["presets"]["mine"]["segments_past_end"] = "keep"  # the real presets' setting
    snakemake(tmp_path, config, "--until", "durations")
    assert [r["start_s"] for r in table(checked) if r["video"] == "late"] == ["0.2", "5.0"]
    assert [r["action"] for r in table(checked, "past_end.tsv")] == ["kept"]
