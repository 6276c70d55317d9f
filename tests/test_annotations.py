import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import annotation_io as A
from pipeline.core.safeload import UnsafePickleError, load_npy, load_pickle
from conftest import thumos_dir


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def thumos_small(tmp_path):
    val, test = tmp_path / "annotations_val", tmp_path / "annotations_test"
    write(val / "HighJump_val.txt", "video_validation_0000266  72.8 76.4\nvideo_validation_0000266  80.0 81.5\n")
    write(val / "Diving_val.txt", "video_validation_0000681  44.0 50.9\n")
    write(val / "Ambiguous_val.txt", "video_validation_0000681  40.0 44.0\n")
    write(val / "readme.txt", "not an annotation file\n")
    write(test / "HighJump_test.txt", "video_test_0000004  1.0 2.5\n\n")
    write(test / "Diving_test.txt", "")
    write(test / "Ambiguous_test.txt", "video_test_0001292  3.0 4.0\n")
    return {"validation": val, "test": test}


def test_thumos_txt_table(thumos_small):
    ann = A.validate(A.read_thumos14_txt(thumos_small))
    assert ann.classes == ["Diving", "HighJump"]
    rows = sorted((s.video, s.subset, s.label, s.start_s, s.end_s) for s in ann.segments)
    assert rows == [
        ("video_test_0000004", "test", "HighJump", 1.0, 2.5),
        ("video_validation_0000266", "validation", "HighJump", 72.8, 76.4),
        ("video_validation_0000266", "validation", "HighJump", 80.0, 81.5),
        ("video_validation_0000681", "validation", "Diving", 44.0, 50.9),
    ]
    assert all(math.isnan(s.duration) for s in ann.segments)  # the txt format has no durations
    # Ambiguous segments are kept apart, and a video with only ambiguous segments is still a video.
    assert [(s.video, s.label) for s in ann.ambiguous] == [("video_validation_0000681", "Ambiguous"),
                                                           ("video_test_0001292", "Ambiguous")]
    assert ann.videos_in("test") == ["video_test_0000004", "video_test_0001292"]
    assert ann.labels_of("video_validation_0000266") == ["HighJump"]


def test_thumos_txt_malformed_line_names_file_and_line(thumos_small):
    write(thumos_small["validation"] / "Diving_val.txt", "video_validation_0000681  44.0 50.9\nvideo_x 4.0\n")
    with pytest.raises(A.AnnotationError, match=r"Diving_val\.txt:2: expected 'video start end'"):
        A.read_thumos14_txt(thumos_small)
    write(thumos_small["validation"] / "Diving_val.txt", "video_validation_0000681  44.0 fifty\n")
    with pytest.raises(A.AnnotationError, match=r"Diving_val\.txt:1: 'fifty' is not a number"):
        A.read_thumos14_txt(thumos_small)


def test_real_thumos14_txt():
    root = thumos_dir()
    ann = A.validate(A.read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"}))
    assert len(ann.classes) == 20 and ann.classes[0] == "BaseballPitch" and ann.classes[-1] == "VolleyballSpiking"
    assert len(ann.segments) == 3007 + 3358
    assert len(ann.videos_in("validation")) == 200
    # 212 test videos with actions plus 0001292, which has only Ambiguous segments.
    assert len(ann.videos_in("test")) == 213
    assert len({s.video for s in ann.segments if s.subset == "test"}) == 212
    assert "video_test_0001292" in ann.videos and not ann.labels_of("video_test_0001292")
    assert len(ann.ambiguous) == 89 + 99


def test_real_wtalc_set_matches_the_txt_files():
    root = thumos_dir()
    wt = root / "Thumos14reduced-Annotations"
    if not wt.is_dir():
        pytest.skip("W-TALC annotation set not present")
    w = A.validate(A.read_wtalc_npy(wt), on_bad="skip")
    t = A.read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"})
    assert w.classes == t.classes
    assert len(w.videos) == 412
    key = lambda s: (s.video, s.label, round(s.start_s, 3), round(s.end_s, 3))
    # Identical to the official txt files, except rows the W-TALC durations show as past the video's end.
    raw = A.read_wtalc_npy(wt)
    assert sorted(map(key, raw.segments)) == sorted(map(key, t.segments))
    assert len(w.dropped) == len(raw.segments) - len(w.segments) > 0
    assert all(math.isfinite(s.duration) for s in w.segments)


def test_real_data_segment_past_duration_is_reported():
    wt = thumos_dir() / "Thumos14reduced-Annotations"
    if not wt.is_dir():
        pytest.skip("W-TALC annotation set not present")
    with pytest.raises(A.AnnotationError, match=r"video_validation_0000364: segment \[113.6, 117.3\] s ends past "
                                                r"the video's duration 112.638 s"):
        A.validate(A.read_wtalc_npy(wt))


def _save_object(path, items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    np.save(path, arr, allow_pickle=True)


@pytest.fixture
def wtalc_small(tmp_path):
    d = tmp_path / "Mini-Annotations"
    d.mkdir()
    np.save(d / "classlist.npy", np.array([b"Diving", b"HighJump"]))
    np.save(d / "videoname.npy", np.array([b"v_train_1", b"v_test_1", b"v_test_2"]))
    np.save(d / "subset.npy", np.array([b"validation", b"test", b"test"]))
    np.save(d / "duration.npy", np.array([[30.0], [20.0], [12.5]]))
    _save_object(d / "segments.npy", [[[1.0, 2.0], [5.5, 9.0]], [[3.0, 4.0]], []])
    _save_object(d / "labels.npy", [[b"Diving", b"HighJump"], [b"HighJump"], []])
    write(d / "Ambiguous_test.txt", "v_test_1  0.0 1.4\nv_not_in_set  2.0 3.0\n")
    return d


def test_wtalc_npy_table(wtalc_small):
    ann = A.validate(A.read_wtalc_npy(wtalc_small))
    assert ann.classes == ["Diving", "HighJump"]
    assert [(s.video, s.subset, s.label, s.start_s, s.end_s, s.duration) for s in ann.segments] == [
        ("v_train_1", "validation", "Diving", 1.0, 2.0, 30.0),
        ("v_train_1", "validation", "HighJump", 5.5, 9.0, 30.0),
        ("v_test_1", "test", "HighJump", 3.0, 4.0, 20.0),
    ]
    assert ann.videos["v_test_2"] == ("test", 12.5)  # a video without actions is still listed
    assert [(s.video, s.start_s, s.end_s) for s in ann.ambiguous] == [("v_test_1", 0.0, 1.4)]


def test_wtalc_missing_file_is_named(wtalc_small):
    (wtalc_small / "labels.npy").unlink()
    with pytest.raises(A.AnnotationError, match="missing W-TALC annotation file labels.npy"):
        A.read_wtalc_npy(wtalc_small)


def test_activitynet_json(tmp_path):
    path = write(tmp_path / "anet.json", json.dumps({"version": "1.2", "taxonomy": [], "database": {
        "abc": {"subset": "training", "duration": 100.0, "annotations": [
            {"segment": [10.0, 20.5], "label": "Long jump"}, {"segment": [30, 40], "label": "Shot put"}]},
        "def": {"subset": "validation", "duration": 50.0, "annotations": [
            {"segment": [0.0, 49.0], "label": "Long jump"}]},
        "ghi": {"subset": "testing", "duration": 60.0, "annotations": []},
    }}))
    ann = A.validate(A.read_activitynet_json(path))
    assert ann.classes == ["Long jump", "Shot put"]
    assert [(s.video, s.subset, s.label, s.start_s, s.end_s, s.duration) for s in ann.segments] == [
        ("abc", "training", "Long jump", 10.0, 20.5, 100.0),
        ("abc", "training", "Shot put", 30.0, 40.0, 100.0),
        ("def", "validation", "Long jump", 0.0, 49.0, 50.0),
    ]
    assert ann.videos_in("testing") == ["ghi"]


def test_activitynet_json_not_the_database_layout(tmp_path):
    path = write(tmp_path / "anet.json", json.dumps({"results": {}}))
    with pytest.raises(A.AnnotationError, match=r"anet\.json: not an ActivityNet annotation json"):
        A.read_activitynet_json(path)


def test_csv_table(tmp_path):
    path = write(tmp_path / "ann.csv", "video,subset,label,start,end,duration\n"
                 "my video é,train,Jump,1.5,3,10\nclip2,test,Run,0,2.25,\nclip2,test,Ambiguous,2.5,3,\n")
    ann = A.validate(A.read_csv(path))
    assert ann.classes == ["Jump", "Run"]
    assert [(s.video, s.subset, s.label, s.start_s, s.end_s) for s in ann.segments] == [
        ("my video é", "train", "Jump", 1.5, 3.0), ("clip2", "test", "Run", 0.0, 2.25)]
    assert ann.segments[0].duration == 10.0 and math.isnan(ann.segments[1].duration)
    assert [(s.video, s.start_s) for s in ann.ambiguous] == [("clip2", 2.5)]


def test_csv_bad_header(tmp_path):
    path = write(tmp_path / "ann.csv", "video,label,start,end\nx,Jump,1,2\n")
    with pytest.raises(A.AnnotationError, match=r"ann\.csv: header must contain"):
        A.read_csv(path)


@pytest.mark.parametrize("row, message", [
    ("v1,train,Swim,1,2,10", r"ann\.csv:3: video v1: unknown label 'Swim' \(known: Jump, Run\)"),
    ("v1,train,Jump,4,4,10", r"ann\.csv:3: video v1: start 4 s is not before end 4 s"),
    ("v1,train,Jump,5,3,10", r"ann\.csv:3: video v1: start 5 s is not before end 3 s"),
    ("v1,train,Jump,8,12,10", r"ann\.csv:3: video v1: segment \[8, 12\] s ends past the video's duration 10 s"),
    ("v1,train,Jump,-1,2,10", r"ann\.csv:3: video v1: negative start -1 s"),
    ("v0,train,Run,1,2,10", r"ann\.csv:3: video v0: duplicate of .*ann\.csv:2"),
])
def test_bad_rows_fail_or_skip(tmp_path, row, message):
    path = write(tmp_path / "ann.csv", "video,subset,label,start,end,duration\nv0,train,Run,1,2,10\n" + row + "\n")
    ann = A.read_csv(path, classes=["Jump", "Run"])
    with pytest.raises(A.AnnotationError, match=message):
        A.validate(ann, on_bad="fail")
    kept = A.validate(ann, on_bad="skip")
    assert [(s.video, s.label, s.start_s) for s in kept.segments] == [("v0", "Run", 1.0)]
    assert len(kept.dropped) == 1 and kept.dropped[0][0].source.endswith("ann.csv:3")


def test_overshoot_within_tolerance_is_kept(tmp_path):
    path = write(tmp_path / "ann.csv", "video,subset,label,start,end,duration\nv,train,Jump,8,10.3,10\n")
    assert len(A.validate(A.read_csv(path)).segments) == 1


def test_durations_from_decode_enable_the_past_end_check(thumos_small):
    ann = A.read_thumos14_txt(thumos_small)
    ann = A.with_durations(ann, {"video_validation_0000266": 78.0})
    with pytest.raises(A.AnnotationError, match=r"HighJump_val\.txt:2: video video_validation_0000266: segment "
                                                r"\[80, 81.5\] s ends past the video's duration 78 s"):
        A.validate(ann)


def test_missing_videos_fail_or_skip(thumos_small):
    ann = A.read_thumos14_txt(thumos_small)
    on_disk = {"video_validation_0000266", "video_test_0000004"}
    with pytest.raises(A.AnnotationError, match=r"2 annotated video\(s\) not found on disk: "
                                                r"video_test_0001292, video_validation_0000681"):
        A.select_videos(ann, on_disk, "fail")
    present, missing = A.select_videos(ann, on_disk, "skip")
    assert present == ["video_test_0000004", "video_validation_0000266"]
    assert missing == ["video_test_0001292", "video_validation_0000681"]
    kept = ann.restrict_to(present)
    assert {s.video for s in kept.segments} == set(present) and not kept.ambiguous


def test_table_round_trip(tmp_path, wtalc_small):
    ann = A.validate(A.read_wtalc_npy(wtalc_small))
    A.write_table(ann, tmp_path / "out")
    back = A.read_table(tmp_path / "out")
    key = lambda s: (s.video, s.subset, s.label, s.start_s, s.end_s, s.duration)
    assert list(map(key, back.segments)) == list(map(key, ann.segments))
    assert list(map(key, back.ambiguous)) == list(map(key, ann.ambiguous))
    assert back.videos == ann.videos and back.classes == ann.classes
    header = (tmp_path / "out" / "annotations.tsv").read_text().splitlines()[0]
    assert header.split("\t") == list(A.TABLE_COLUMNS)


def test_read_spec_dispatch(tmp_path, wtalc_small):
    ann = A.read({"format": "wtalc_npy", "path": str(wtalc_small)})
    assert len(ann.segments) == 3
    with pytest.raises(A.AnnotationError, match="unknown annotation format 'xml'"):
        A.read({"format": "xml", "path": "x"})


# ---------------------------------------------------------- restricted loading


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_npy_refuses_code(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[:] = [[1.0, 2.0], _Evil()]
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"evil\.npy: refusing to unpickle (posix|os)\.system"):
        load_npy(tmp_path / "evil.npy")


def test_restricted_pickle_refuses_code_but_loads_arrays(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 3}))
    loaded = load_pickle(tmp_path / "ok.pkl")
    assert loaded["n"] == 3 and loaded["w"].shape == (2, 3) and loaded["w"].dtype == np.float32
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"w": _Evil()}))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_pickle(tmp_path / "evil.pkl")


def test_plain_npy_needs_no_pickle(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(5))
    assert load_npy(tmp_path / "x.npy").tolist() == [0, 1, 2, 3, 4]
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.npy: not a \.npy file"):
        load_npy(tmp_path / "bad.npy")


# ------------------------------------------------------- ActivityNet 1.2


ANET = Path(__file__).resolve().parents[1] / "data" / "activitynet12" / "ActivityNet1.2-Annotations"


def test_real_activitynet12_set():
    ann = A.read_wtalc_npy(ANET)
    assert len(ann.videos) == 7202 and len(ann.classes) == 100
    assert len(ann.videos_in("training")) == 4819 and len(ann.videos_in("validation")) == 2383
    assert round(sum(d for _, d in ann.videos.values())) == 831846
    assert ann.aliases["video_4"] == "--0edUL8zmA"  # from url.npy: the id the crawler names files with
    assert len(set(ann.aliases.values())) == 7202
    kept = A.validate(ann, on_bad="skip")
    zero = [why for _, why in kept.dropped if "is not before end" in why]
    duplicates = [s for s, why in kept.dropped if "duplicate of" in why]
    assert len(zero) == 10 and len(duplicates) == 34 and len(kept.dropped) == 44
    assert sum(s.subset == "validation" for s in duplicates) == 7
    with pytest.raises(A.AnnotationError, match=r"segments\.npy\[\d+\]\[0\]: video video_\d+: start"):
        A.validate(ann)


def test_labels_all_needs_only_the_latin1_codec():
    import io

    from pipeline.core.safeload import restricted_pickle_load

    assert list(load_npy(ANET / "labels_all.npy")[0]) == ["Dodgeball"]

    class Evil:
        def __reduce__(self):
            import codecs
            return codecs.encode, ("x", "rot13")

    with pytest.raises(UnsafePickleError, match="only the latin1 encoding"):
        restricted_pickle_load(io.BytesIO(pickle.dumps(Evil(), protocol=2)))


def test_official_json_is_read_instead_when_present(tmp_path):
    spec = {"format": "wtalc_npy", "path": str(ANET), "official": str(tmp_path / "activity_net.v1-2.min.json")}
    assert len(A.read(spec).videos) == 7202 and A.source_files(spec)[-1].endswith(".npy")
    (tmp_path / "activity_net.v1-2.min.json").write_text(json.dumps({"database": {
        "--0edUL8zmA": {"subset": "training", "duration": 92.18,
                        "annotations": [{"segment": [5.5, 86.7], "label": "Dodgeball"}]}}}))
    ann = A.read(spec)
    assert list(ann.videos) == ["--0edUL8zmA"] and ann.segments[0].label == "Dodgeball"
    assert A.source_files(spec) == [str(tmp_path / "activity_net.v1-2.min.json")]


def test_videos_are_matched_by_name_or_youtube_id(tmp_path):
    from pipeline.core.videos import VideoFolderError, find_videos, match

    for name in ("v_abc.mp4", "def.MKV", "video_3.avi", "stray.mp4", "notes.txt"):
        (tmp_path / name).touch()
    found = match(["video_1", "video_2", "video_3", "video_4"], find_videos(tmp_path, ["mp4", "mkv", "avi"]),
                  {"video_1": "abc", "video_2": "def", "video_4": "zzz"})
    assert found.paths == {"video_1": str(tmp_path / "v_abc.mp4"), "video_2": str(tmp_path / "def.MKV"),
                           "video_3": str(tmp_path / "video_3.avi")}
    assert found.missing == ["video_4"] and found.unannotated == ["stray"]
    with pytest.raises(VideoFolderError, match="matches two annotated videos"):
        match(["a", "b"], {"abc": "x/abc.mp4"}, {"a": "abc", "b": "abc"})


# ---------------------------------------------------------------- text as researchers' files have it


def test_a_byte_order_mark_reads_as_the_same_file(tmp_path):
    """Excel's "CSV UTF-8" and Windows editors start files with a UTF-8 byte-order mark."""
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "Jump_val.txt").write_bytes("\ufeffvideo_validation_0000051  1.5 2.5\n".encode())
    ann = A.read_thumos14_txt({"validation": tmp_path / "val"})
    assert [s.video for s in ann.segments] == ["video_validation_0000051"]
    (tmp_path / "a.csv").write_bytes("\ufeffvideo,subset,label,start,end\nv1,train,Jump,1,2\n".encode("utf-8"))
    assert [(s.video, s.label) for s in A.read_csv(tmp_path / "a.csv").segments] == [("v1", "Jump")]
    (tmp_path / "db.json").write_bytes(("\ufeff" + json.dumps({"database": {"v": {"subset": "validation",
        "duration": 9.0, "annotations": [{"segment": [1, 2], "label": "Jump"}]}}})).encode())
    assert len(A.read_activitynet_json(tmp_path / "db.json").segments) == 1


def test_csv_fields_are_stripped_and_a_tab_inside_one_is_refused(tmp_path):
    (tmp_path / "a.csv").write_text('video, subset ,label,start,end\n" video_1 ",train,"Pulse\t", 1.0 ,2\n')
    (seg,) = A.read_csv(tmp_path / "a.csv").segments
    assert (seg.video, seg.subset, seg.label, seg.start_s) == ("video_1", "train", "Pulse", 1.0)
    (tmp_path / "b.csv").write_text('video,subset,label,start,end\nv1,train,Jump,1,2\nv2,train,"Pul\tse",1,2\n')
    with pytest.raises(A.AnnotationError, match=rf"^{tmp_path / 'b.csv'}:3: a tab or line break inside the label "
                                                r"field 'Pul\\tse'"):
        A.read_csv(tmp_path / "b.csv")
