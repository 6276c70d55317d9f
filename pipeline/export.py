"""export: our features and annotations in the layouts other tools read as they are.

``wtalc/`` (W-TALC, 3C-Net, D2-Net's own code): ``<Name>-I3D-JOINTFeatures.npy``,
one object array of (T, 2048) float32 in ``videoname`` order, and
``<Name>-Annotations/`` with videoname, subset, classlist (bytes arrays: those
loaders call ``.decode()`` on them), duration (N, 1) float64, segments and
labels (per segment), labels_all (per video, the unique labels: what the
loaders build video-level labels from) and, where the preset has ambiguous
segments, ``Ambiguous_test.txt``. ``<Name>`` is the name those codebases switch
on: ``Thumos14reduced`` for thumos14, ``ActivityNet1.2`` for activitynet12,
otherwise the preset's name. Every annotated video has an entry; one without
features (missing or skipped) gets a (0, 2048) array, as W-TALC's own
ActivityNet set has. Object arrays are pickled with protocol 3 and numpy's
pre-2.0 module names (``numpy.core``), which numpy 1.x (what those codebases
run on) and 2.x both load; the features are streamed one video at a time.

``actionformer/`` (ActionFormer, OpenTAD): ``features/<prefix><video>.npy``
(T, 2048) float32 per video with features, ``database.json``
(``{"database": {video: {subset, duration, fps, frame, annotations: [{segment,
label, label_id}]}}}``), ``category_idx.txt`` (one class per line, in label_id
order), ``config_overlay.yaml`` (the dataset block for their configs:
feat_stride, num_frames, default_fps, file_prefix, splits, classes) and
``export_info.json`` (the same facts and the videos left out). ActivityNet
videos are keyed by their YouTube id with the ``v_`` file prefix, as
ActionFormer's ActivityNet configs expect.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.core.annotation_io import DURATION_TOLERANCE_S, Annotations, read_table, with_durations
from pipeline.core.feature_files import FEATURE_DIM, read_features
from pipeline.core.io import atomic_path, atomic_write_json, atomic_write_text, fsync_path
from pipeline.core.run_files import read_index

WTALC_NAMES = {"thumos14": "Thumos14reduced", "activitynet12": "ActivityNet1.2"}


# ---------------------------------------------------------------- pickles numpy 1.x loads


class _Numpy1Pickler(pickle._Pickler):
    """Protocol-3 pickler that names numpy's modules as numpy 1.x does (numpy 2 has them as aliases).

    Fast mode (no memo) keeps memory to the object being written and lets each element be produced
    on demand (``_LazyArray``)."""

    def __init__(self, file):
        super().__init__(file, protocol=3)
        self.fast = True

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + ("numpy.core" + module[len("numpy._core"):]).encode() + b"\n"
                       + name.encode() + b"\n")
            return
        super().save_global(obj, name)


class _LazyArray:
    """An object-array element that is read from disk only while it is being pickled."""

    def __init__(self, load):
        self._load = load

    def __reduce_ex__(self, protocol):
        return self._load().__reduce_ex__(protocol)


def save_object_npy(path: str | os.PathLike, items: list) -> None:
    """``items`` as a 1-d object ``.npy`` that numpy 1.x and 2.x load (``allow_pickle=True``), atomically."""
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (len(items),)})
        _Numpy1Pickler(f).dump(arr)


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


# ------------------------------------------------------------------------- W-TALC


def video_order(ann: Annotations, subsets: list[str]) -> list[str]:
    """The preset's training subset, then its test subset, then any other, sorted within each (W-TALC's order)."""
    rank = {s: i for i, s in enumerate(subsets)}
    return sorted(ann.videos, key=lambda v: (rank.get(ann.videos[v][0], len(rank)), ann.videos[v][0], v))


def decoded_durations(ann: Annotations, decoded: dict[str, float]) -> tuple[Annotations, dict[str, dict]]:
    """``ann`` with each video's decoded duration where decode measured one, and {video: {"decoded",
    "annotated"}} for those whose annotated duration differs from it by more than the durations stage's
    tolerance."""
    differ = {v: {"decoded": decoded[v], "annotated": d} for v, (_, d) in ann.videos.items()
              if v in decoded and math.isfinite(d) and abs(d - decoded[v]) > DURATION_TOLERANCE_S}
    videos = {v: (sub, decoded.get(v, d)) for v, (sub, d) in ann.videos.items()}
    return with_durations(replace(ann, videos=videos), decoded), differ


def write_wtalc(ann: Annotations, features: dict[str, str], out: Path, name: str, subsets: list[str],
                differ: dict[str, dict] | None = None) -> dict:
    """The W-TALC layout in ``out``; ``features``: video -> its .npy (videos without one get (0, 2048)).
    ``differ``: videos whose annotated duration differs from the decoded one in duration.npy, recorded in
    ``duration_annotated.json`` beside it."""
    videos = video_order(ann, subsets)
    adir = out / f"{name}-Annotations"
    adir.mkdir(parents=True, exist_ok=True)
    segs = {v: [] for v in videos}
    for s in sorted(ann.segments, key=lambda s: (s.video, s.start_s, s.end_s, s.label)):
        segs[s.video].append(s)
    save_npy(adir / "videoname.npy", np.array([v.encode() for v in videos]))
    save_npy(adir / "subset.npy", np.array([ann.videos[v][0].encode() for v in videos]))
    save_npy(adir / "classlist.npy", np.array([c.encode() for c in ann.classes]))
    save_npy(adir / "duration.npy", np.array([[ann.videos[v][1]] for v in videos], dtype=np.float64))
    if differ:
        atomic_write_json(adir / "duration_annotated.json", {v: differ[v] for v in videos if v in differ})
    save_object_npy(adir / "segments.npy", [[[s.start_s, s.end_s] for s in segs[v]] for v in videos])
    save_object_npy(adir / "labels.npy", [[s.label for s in segs[v]] for v in videos])
    save_object_npy(adir / "labels_all.npy",
                    [sorted({s.label for s in segs[v]}, key=ann.classes.index) for v in videos])
    test = subsets[1] if len(subsets) > 1 else None
    # D2-Net's (and W-TALC's) evaluation reads these two at every test: the test subset's Ambiguous
    # segments, in the annotation files' order and numbers (two spaces after the name: D2-Net reads
    # line.split(' ')[2:4]), and the ground truth per class as fractions of each video's duration.
    atomic_write_text(adir / "Ambiguous_test.txt", "".join(
        f"{s.video}  {s.start_s!r} {s.end_s!r}\n" for s in ann.ambiguous if ann.videos.get(s.video, ("",))[0] == test))
    save_object_npy(adir / "test_gt_segments.npy", [np.array(
        [[s.video.rsplit("_", 1)[-1], s.start_s / ann.videos[s.video][1], s.end_s / ann.videos[s.video][1]]
         for s in ann.segments if s.label == c and ann.videos[s.video][0] == test], dtype=object).reshape(-1, 3)
        for c in ann.classes])

    def loader(v):
        path = features.get(v)
        return lambda: read_features(path) if path else np.zeros((0, FEATURE_DIM), np.float32)

    save_object_npy(out / f"{name}-I3D-JOINTFeatures.npy", [_LazyArray(loader(v)) for v in videos])
    return {"name": name, "videos": len(videos), "without_features": sorted(v for v in videos if v not in features)}


# ------------------------------------------------------------- ActionFormer / OpenTAD


def write_actionformer(ann: Annotations, features: dict[str, str], index: dict[str, dict], out: Path,
                       subsets: list[str], keys: dict[str, str], prefix: str,
                       differ: dict[str, dict] | None = None) -> dict:
    """The ActionFormer/OpenTAD layout in ``out``; ``keys``: our video name -> its key there (ActivityNet: YouTube id)."""
    fdir = out / "features"
    fdir.mkdir(parents=True, exist_ok=True)
    label_id = {c: i for i, c in enumerate(ann.classes)}
    segs: dict[str, list] = {}
    for s in sorted(ann.segments, key=lambda s: (s.video, s.start_s, s.end_s, s.label)):
        segs.setdefault(s.video, []).append(s)
    database, left_out = {}, []
    for v in video_order(ann, subsets):
        if v not in features:
            left_out.append(v)
            continue
        key = keys.get(v, v)
        dst = fdir / f"{prefix}{key}.npy"
        with atomic_path(dst) as tmp:
            shutil.copyfile(features[v], tmp)
        row = index[v]
        duration = ann.videos[v][1]
        database[key] = {"subset": ann.videos[v][0], "duration": duration, "fps": row["fps"],
                         "frame": int(round(duration * row["fps"])),
                         "annotations": [{"segment": [s.start_s, s.end_s], "label": s.label,
                                          "label_id": label_id[s.label]} for s in segs.get(v, [])]}
        if v in (differ or {}):
            database[key]["annotated_duration"] = differ[v]["annotated"]
    rows = [index[v] for v in features]
    strides = {(r["snippet_stride"], r["snippet_frames"]) for r in rows}
    if len(strides) > 1:
        raise ValueError(f"features of one export differ in snippet stride/window: {sorted(strides)}")
    stride, window = strides.pop() if strides else (None, None)
    fps = {r["fps"] for r in rows}
    info = {"feat_stride": stride, "num_frames": window, "default_fps": fps.pop() if len(fps) == 1 else None,
            "file_prefix": prefix, "file_ext": ".npy", "input_dim": FEATURE_DIM, "num_classes": len(ann.classes),
            "train_split": [subsets[0]], "val_split": [subsets[1]] if len(subsets) > 1 else [],
            "videos": len(database), "left_out": left_out}
    atomic_write_json(out / "database.json", {"version": "vidloc export", "database": database})
    atomic_write_text(out / "category_idx.txt", "".join(c + "\n" for c in ann.classes))
    atomic_write_json(out / "export_info.json", info)
    overlay = {"dataset": {"json_file": "database.json", "feat_folder": "features",
                           **{k: info[k] for k in ("file_prefix", "file_ext", "feat_stride", "num_frames",
                                                   "default_fps", "input_dim", "num_classes")}},
               "train_split": info["train_split"], "val_split": info["val_split"]}
    import yaml

    atomic_write_text(out / "config_overlay.yaml",
                      "# Merge into an ActionFormer/OpenTAD config; paths are relative to this folder.\n"
                      + yaml.safe_dump(overlay, sort_keys=False))
    return info


# ------------------------------------------------------------------------- the stage


def run(preset: str, annotations_dir: str, index_tsv: str, features: list[str], out: str, subsets: list[str]) -> dict:
    index = {r["video"]: r for r in read_index(index_tsv)}
    # Durations describe the features: decode's measure of each video, which loaders lay the snippet grid
    # on; an annotated one that differs (ActivityNet's, of a re-encoded download) is recorded beside it.
    ann, differ = decoded_durations(read_table(annotations_dir),
                                    {v: r["duration_s"] for v, r in index.items() if r["duration_s"] is not None})
    ok = {Path(p).stem: p for p in features if index.get(Path(p).stem, {}).get("status") == "ok"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(".partial-*"):  # a killed export's (Snakemake runs one export job at a time)
        shutil.rmtree(old, ignore_errors=True)
        print(f"export: removed {old}: left by an interrupted export", file=sys.stderr)
    # Both layouts are written whole into a folder of their own and moved into place only when complete:
    # a killed export leaves the previous export (or none), never a half-written one.
    partial = out / f".partial-{socket.gethostname()}.{os.getpid()}"
    try:
        w = write_wtalc(ann, ok, partial / "wtalc", WTALC_NAMES.get(preset, preset), subsets, differ)
        keys = dict(ann.aliases)  # ActivityNet: YouTube ids
        a = write_actionformer(ann, ok, index, partial / "actionformer", subsets, keys, "v_" if keys else "",
                               differ)
        for layout in ("wtalc", "actionformer"):
            replace_folder(partial / layout, out / layout)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"wtalc": w, "actionformer": a}


def replace_folder(new: Path, target: Path) -> None:
    """``new`` renamed to ``target``; an existing ``target`` is moved aside first and removed after."""
    aside = target.with_name(f".replaced-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(aside)
    new.rename(target)
    fsync_path(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("features", nargs="*", help="features/<video>.npy files")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--index", required=True, help="features/index.tsv")
    ap.add_argument("--subsets", required=True, help="training subset,test subset")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    result = run(args.preset, args.annotations, args.index, args.features, args.out, args.subsets.split(","))
    w, a = result["wtalc"], result["actionformer"]
    print(f"export: W-TALC {w['name']}: {w['videos']} videos ({len(w['without_features'])} without features); "
          f"ActionFormer: {a['videos']} videos, stride {a['feat_stride']}, window {a['num_frames']}, "
          f"fps {a['default_fps']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
