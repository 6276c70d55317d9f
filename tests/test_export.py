"""Exports read back the way W-TALC/D2-Net and ActionFormer/OpenTAD read them, and round trips against our tables."""
import io
import json
import pickletools

import numpy as np
import pytest
import yaml

from conftest import REPO, thumos_dir
from pipeline.core.annotation_io import read_thumos14_txt, read_wtalc_npy, write_table
from pipeline.export import run, save_object_npy
from pipeline.core.run_files import INDEX_COLUMNS, index_tsv, read_index

# What numpy 1.x pickles of object arrays reference; numpy 2 also resolves these (numpy.core aliases).
NUMPY1_GLOBALS = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def pickle_globals(path) -> tuple[set[str], int]:
    """(GLOBAL references, protocol) of an object .npy's pickle stream."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        stream = io.BytesIO(f.read())
    names, proto = set(), 0
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "STACK_GLOBAL"):
            names.add(arg if op.name == "GLOBAL" else "STACK_GLOBAL")
        if op.name == "PROTO":
            proto = arg
    return names, proto


def write_features(out, ann, videos, rng, stride=16, window=16, fps=25.0, skipped=(), durations=None):
    """features/<video>.npy and index.tsv as the features and feature_index stages write them; ``durations``:
    decoded durations to record for some videos (others: the last segment's end + 7.5 s)."""
    fdir = out / "features"
    fdir.mkdir(parents=True)
    rows, paths = [], []
    for v in videos:
        n = 0 if v in skipped else int(rng.integers(5, 30))
        np.save(fdir / f"{v}.npy", rng.standard_normal((n, 2048)).astype(np.float32))
        paths.append(str(fdir / f"{v}.npy"))
        duration = (durations or {}).get(v, max([s.end_s for s in ann.segments if s.video == v] + [0]) + 7.5)
        rows.append(dict(zip(INDEX_COLUMNS, [v, "skipped" if v in skipped else "ok", n, fps, window, stride, duration,
                                       "corrupt" if v in skipped else ""])))
    (fdir / "index.tsv").write_text(index_tsv(rows))
    return paths


@pytest.fixture(scope="module")
def thumos_export(tmp_path_factory):
    """Ten real THUMOS14 videos (five validation, five test, with ambiguous segments) and random features."""
    tmp = tmp_path_factory.mktemp("export")
    root = thumos_dir()
    full = read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"})
    amb = sorted({s.video for s in full.ambiguous})
    val = sorted(v for v, (s, _) in full.videos.items() if s == "validation")[:5]
    test = amb[:3] + sorted(v for v, (s, _) in full.videos.items() if s == "test" and v not in amb)[:2]
    ann = full.restrict_to(val + test)
    write_table(ann, tmp / "annotations")
    paths = write_features(tmp, ann, val + test, np.random.default_rng(0), skipped={test[-1]})
    run("thumos14", str(tmp / "annotations"), str(tmp / "features" / "index.tsv"), paths, str(tmp / "export"),
        ["validation", "test"])
    return tmp, ann, val + test, test[-1]


def test_wtalc_layout_loads_as_wtalc_and_d2net_load_it(thumos_export):
    tmp, ann, videos, skipped = thumos_export
    w = tmp / "export" / "wtalc"
    adir = w / "Thumos14reduced-Annotations"
    # W-TALC's Dataset.__init__: features with encoding='bytes', the rest as plain pickles
    features = np.load(w / "Thumos14reduced-I3D-JOINTFeatures.npy", encoding="bytes", allow_pickle=True)
    labels = np.load(adir / "labels_all.npy", allow_pickle=True)
    classlist = np.load(adir / "classlist.npy", allow_pickle=True)
    subset = np.load(adir / "subset.npy", allow_pickle=True)
    names = np.load(adir / "videoname.npy", allow_pickle=True)
    duration = np.load(adir / "duration.npy", allow_pickle=True)
    segments = np.load(adir / "segments.npy", allow_pickle=True)
    assert classlist.dtype.kind == "S" and subset.dtype.kind == "S" and names.dtype.kind == "S"
    assert duration.shape == (10, 1) and duration.dtype == np.float64
    train_idx = [i for i, s in enumerate(subset) if s.decode("utf-8") == "validation"]
    assert train_idx == list(range(5))  # validation first, as the original set
    # utils.strlist2multihot: every label is found among classlist[i].decode('utf-8')
    decoded = [c.decode("utf-8") for c in classlist]
    for labs in labels:
        assert labs and all(isinstance(lab, str) and lab in decoded for lab in labs)
    order = [n.decode() for n in names]
    assert sorted(order[:5]) == order[:5] and set(order) == set(videos)
    for i, v in enumerate(order):
        f = features[i]
        assert f.dtype == np.float32 and f.shape[1:] == (2048,)
        want = np.load(tmp / "features" / f"{v}.npy")
        assert np.array_equal(f, want) if v != skipped else f.shape == (0, 2048)
        assert len(segments[i]) == len(np.load(adir / "labels.npy", allow_pickle=True)[i])
    amb = (adir / "Ambiguous_test.txt").read_text().splitlines()
    assert amb and all(len(line.split(" ")[2:4]) == 2 for line in amb)  # D2-Net: line.split(' ')[2:4]


def test_wtalc_pickles_are_what_numpy_1_writes(thumos_export):
    tmp, *_ = thumos_export
    w = tmp / "export" / "wtalc"
    for path in [w / "Thumos14reduced-I3D-JOINTFeatures.npy",
                 *[w / "Thumos14reduced-Annotations" / f"{n}.npy" for n in ("segments", "labels", "labels_all")]]:
        names, proto = pickle_globals(path)
        assert names <= NUMPY1_GLOBALS and proto <= 3, (path.name, names, proto)


def test_wtalc_export_round_trips_through_our_reader(thumos_export):
    tmp, ann, *_ = thumos_export
    back = read_wtalc_npy(tmp / "export" / "wtalc" / "Thumos14reduced-Annotations")
    key = lambda segs: sorted((s.video, s.subset, s.label, s.start_s, s.end_s) for s in segs)
    from pipeline.core.run_files import read_index

    measured = {r["video"]: r["duration_s"] for r in read_index(tmp / "features" / "index.tsv")}
    assert back.classes == ann.classes and back.videos == {v: (s, measured[v]) for v, (s, _) in ann.videos.items()}
    assert key(back.segments) == key(ann.segments) and key(back.ambiguous) == key(ann.ambiguous)


def test_actionformer_layout_loads_as_their_dataset_does(thumos_export):
    tmp, ann, videos, skipped = thumos_export
    a = tmp / "export" / "actionformer"
    info = json.loads((a / "export_info.json").read_text())
    overlay = yaml.safe_load((a / "config_overlay.yaml").read_text())["dataset"]
    assert (info["feat_stride"], info["num_frames"], info["default_fps"]) == (16, 16, 25.0)
    assert overlay["feat_stride"] == 16 and overlay["file_prefix"] == "" and info["left_out"] == [skipped]
    db = json.loads((a / "database.json").read_text())["database"]
    # THUMOS14Dataset._load_json_db: label -> label_id over all videos, which must cover num_classes
    label_dict = {act["label"]: act["label_id"] for v in db.values() for act in v["annotations"]}
    assert all(label_dict[c] == ann.classes.index(c) for c in label_dict)
    assert (a / "category_idx.txt").read_text().splitlines() == ann.classes
    found = 0
    for key, value in db.items():
        if value["subset"].lower() not in ["validation", "test"]:
            continue
        feat_file = a / overlay["feat_folder"] / (overlay["file_prefix"] + key + overlay["file_ext"])
        feats = np.load(feat_file).astype(np.float32)
        found += 1
        assert feats.shape[1] == overlay["input_dim"] and value["frame"] == round(value["duration"] * value["fps"])
        assert np.array_equal(feats, np.load(tmp / "features" / f"{key}.npy"))
        segs = np.asarray([act["segment"] for act in value["annotations"]], np.float32)
        grid = (segs * overlay["default_fps"] - 0.5 * overlay["num_frames"]) / overlay["feat_stride"]
        want = sorted((s.start_s, s.end_s) for s in ann.segments if s.video == key)
        assert np.allclose(sorted(map(tuple, segs)), want) and np.all(grid[:, 1] > grid[:, 0])
    assert found == len(videos) - 1


def activitynet_subset(n_training: int, n_validation: int):
    """(annotations, videos) of the first real ActivityNet 1.2 videos of each subset."""
    full = read_wtalc_npy(REPO / "data" / "activitynet12" / "ActivityNet1.2-Annotations")
    videos = [v for v in sorted(full.videos) if full.videos[v][0] == "training"][:n_training] + \
             [v for v in sorted(full.videos) if full.videos[v][0] == "validation"][:n_validation]
    return full.restrict_to(videos), videos


def test_activitynet_export_keys_videos_by_youtube_id(tmp_path):
    ann, videos = activitynet_subset(3, 2)
    write_table(ann, tmp_path / "annotations")
    paths = write_features(tmp_path, ann, videos, np.random.default_rng(1))
    run("activitynet12", str(tmp_path / "annotations"), str(tmp_path / "features" / "index.tsv"), paths,
        str(tmp_path / "export"), ["training", "validation"])
    a = tmp_path / "export" / "actionformer"
    db = json.loads((a / "database.json").read_text())["database"]
    assert set(db) == {ann.aliases[v] for v in videos}
    for v in videos:
        assert (a / "features" / f"v_{ann.aliases[v]}.npy").exists()
    assert (tmp_path / "export" / "wtalc" / "ActivityNet1.2-I3D-JOINTFeatures.npy").exists()
    assert json.loads((a / "export_info.json").read_text())["file_prefix"] == "v_"


def test_object_npy_streams_lazy_elements(tmp_path):
    from pipeline.export import _LazyArray

    loads = []

    def make(i):
        def load():
            loads.append(i)
            return np.full((2, 3), i, np.float32)
        return _LazyArray(load)

    save_object_npy(tmp_path / "x.npy", [make(i) for i in range(4)])
    x = np.load(tmp_path / "x.npy", allow_pickle=True)
    assert loads == [0, 1, 2, 3] and [float(a[0, 0]) for a in x] == [0, 1, 2, 3]


@pytest.mark.slow
def test_numpy_1_loads_the_wtalc_export(thumos_export, tmp_path):
    """The numpy those codebases ran on (1.26) loads our object arrays (numpy 2's own pickles fail there)."""
    import subprocess
    import venv

    export, ann, videos, _ = thumos_export
    env_dir = tmp_path / "numpy1"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy==1.26.4"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"numpy 1.26.4 not installable here: {r.stderr[-300:]}")
    w = export / "export" / "wtalc"
    code = f"""
import numpy as np
assert np.__version__.startswith("1.26")
a = "{w}/Thumos14reduced-Annotations/"
f = np.load("{w}/Thumos14reduced-I3D-JOINTFeatures.npy", encoding="bytes", allow_pickle=True)
labels = np.load(a + "labels_all.npy", allow_pickle=True)
segments = np.load(a + "segments.npy", allow_pickle=True)
names = [v.decode() for v in np.load(a + "videoname.npy")]
print(len(f), f[0].dtype, f[0].shape[1], len(labels), len(segments), names[0])
"""
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    n, dtype, dim, n_labels, n_segments, first = r.stdout.split()
    assert (int(n), dtype, int(dim), int(n_labels), int(n_segments)) == (len(videos), "float32", 2048, 10, 10)


def test_an_interrupted_export_leaves_the_previous_export_or_none(thumos_export, tmp_path, monkeypatch):
    """Each layout is written whole into a temporary folder and moved into place at the end: an export that
    dies part-way (here: in the ActionFormer layout, after W-TALC's was written) leaves the previous export
    untouched, and the next export removes what the dead one left."""
    import shutil

    from pipeline import export

    tmp, ann, videos, _ = thumos_export
    out = tmp_path / "export"
    shutil.copytree(tmp / "export", out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ("thumos14", str(tmp / "annotations"), str(tmp / "features" / "index.tsv"),
            sorted(str(p) for p in (tmp / "features").glob("*.npy")), str(out), ["validation", "test"])

    def dies(*a, **k):
        raise KeyboardInterrupt  # as a kill part-way would stop it

    monkeypatch.setattr(export, "write_actionformer", dies)
    with pytest.raises(KeyboardInterrupt):
        export.run(*args)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (out / ".partial-elsewhere.1" / "wtalc").mkdir(parents=True)  # what a SIGKILLed export leaves
    monkeypatch.undo()
    export.run(*args)
    assert sorted(p.name for p in out.iterdir()) == ["actionformer", "wtalc"]
    shutil.rmtree(out)
    with pytest.raises(KeyboardInterrupt):  # no previous export: none after the interruption
        monkeypatch.setattr(export, "write_actionformer", dies)
        export.run(*args)
    assert not (out / "wtalc").exists() and not (out / "actionformer").exists()


def test_export_durations_describe_the_features_and_record_a_differing_annotated_one(tmp_path):
    """ActivityNet's annotation says how long the video was on YouTube; the file decoded may be shorter or
    longer. Loaders lay the feature grid on the exported duration: it is the decoded one, and the annotated one
    is recorded beside it where they differ by more than the durations stage's tolerance."""
    from pipeline.core.annotation_io import DURATION_TOLERANCE_S

    ann, videos = activitynet_subset(2, 2)
    write_table(ann, tmp_path / "annotations")
    same = videos[0]  # one video whose decoded duration agrees with its annotation within the tolerance
    paths = write_features(tmp_path, ann, videos, np.random.default_rng(1),
                           durations={same: ann.videos[same][1] + DURATION_TOLERANCE_S / 2})
    decoded = {r["video"]: r["duration_s"] for r in read_index(tmp_path / "features" / "index.tsv")}
    run("activitynet12", str(tmp_path / "annotations"), str(tmp_path / "features" / "index.tsv"), paths,
        str(tmp_path / "export"), ["training", "validation"])
    adir = tmp_path / "export" / "wtalc" / "ActivityNet1.2-Annotations"
    names = [n.decode() for n in np.load(adir / "videoname.npy")]
    assert [d[0] for d in np.load(adir / "duration.npy")] == [decoded[v] for v in names]
    recorded = json.loads((adir / "duration_annotated.json").read_text())
    assert set(recorded) == set(videos) - {same}
    assert all(recorded[v] == {"decoded": decoded[v], "annotated": ann.videos[v][1]} for v in recorded)
    db = json.loads((tmp_path / "export" / "actionformer" / "database.json").read_text())["database"]
    for v in videos:
        entry = db[ann.aliases[v]]
        assert entry["duration"] == decoded[v] and entry["frame"] == round(decoded[v] * entry["fps"])
        assert entry.get("annotated_duration") == (None if v == same else ann.videos[v][1])


def test_d2net_evaluation_files_for_thumos14(tmp_path):
    """D2-Net's periodic evaluation reads <name>-Annotations/test_gt_segments.npy and Ambiguous_test.txt. With
    THUMOS14's real annotations and the released duration.npy as the videos' durations: Ambiguous_test.txt is
    the released file byte for byte; test_gt_segments.npy has the released layout (per class, in classlist
    order, an (N, 3) object array of [video number, start / duration, end / duration]) and holds every official
    test segment. (The released test_gt_segments.npy itself is a cleaned set, 210 videos and 3,234 instances
    with moved boundaries, against the official files' 212 and 3,358: it is not derived from them.)"""
    from pipeline.core.safeload import load_npy

    released = REPO.parent / "shared" / "data" / "thumos14" / "Thumos14reduced-Annotations"
    if not released.is_dir():
        pytest.skip("the released Thumos14reduced-Annotations are not here")
    root = thumos_dir()
    ann = read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"})
    write_table(ann, tmp_path / "annotations")
    names = [n.decode() for n in load_npy(released / "videoname.npy")]
    duration = dict(zip(names, (float(d[0]) for d in load_npy(released / "duration.npy"))))
    videos = sorted(ann.videos)
    # the released duration.npy's durations (the one video W-TALC left out keeps the helper's)
    paths = write_features(tmp_path, ann, videos, np.random.default_rng(2), durations=duration)
    duration = {r["video"]: r["duration_s"] for r in read_index(tmp_path / "features" / "index.tsv")}
    run("thumos14", str(tmp_path / "annotations"), str(tmp_path / "features" / "index.tsv"), paths,
        str(tmp_path / "export"), ["validation", "test"])
    adir = tmp_path / "export" / "wtalc" / "Thumos14reduced-Annotations"
    assert (adir / "Ambiguous_test.txt").read_bytes() == (released / "Ambiguous_test.txt").read_bytes()
    ours = np.load(adir / "test_gt_segments.npy", allow_pickle=True)
    theirs = np.load(released / "test_gt_segments.npy", allow_pickle=True, encoding="bytes")
    assert len(ours) == len(theirs) == 20
    assert all(o.dtype == t.dtype == object and o.ndim == t.ndim == 2 and o.shape[1] == t.shape[1] == 3
               and type(o[0, 0]) is type(t[0, 0]) is str and len(o[0, 0]) == len(t[0, 0]) == 7
               for o, t in zip(ours, theirs))
    classes = [c.decode() for c in load_npy(released / "classlist.npy")]
    test_segments = [s for s in ann.segments if ann.videos[s.video][0] == "test"]
    assert sum(len(o) for o in ours) == len(test_segments) == 3358
    for c, o in zip(classes, ours):
        want = sorted((s.video[-7:], s.start_s / duration[s.video], s.end_s / duration[s.video])
                      for s in test_segments if s.label == c)
        got = sorted((a, float(b), float(e)) for a, b, e in o)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert np.allclose([g[1:] for g in got], [w[1:] for w in want], rtol=0, atol=1e-12)
