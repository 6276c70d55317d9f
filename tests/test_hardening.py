"""Bad conditions end in a clear error naming the file, and a killed stage never leaves a file that looks finished."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pipeline.compute.checkpoint import CheckpointError, build_model, load_model
from pipeline.core.settings import TrainSettings
from pipeline.train import training_set
from test_features import write_inputs
from test_workflow import snakemake

FEATURES_CLI = [sys.executable, "-m", "pipeline.features"]


def test_kill_9_in_the_middle_of_features_then_rerun(tmp_path):
    frames, flow = write_inputs(tmp_path, 24, size=96)
    out, prov = tmp_path / "out" / "v.npy", tmp_path / "out" / "v.json"
    cmd = FEATURES_CLI + [str(frames), "--flow", str(flow), "--flow-meta", str(tmp_path / "flow_meta.json"),
                          "--out", str(out), "--provenance", str(prov), "--threads", "1",
                          "--settings", json.dumps({"rgb_weights": "random", "flow_weights": "random",
                                                    "random_seed": 0}),
                          "--runtime", json.dumps({"device": "cpu", "batch_size": 1, "threads": 1})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "out" / ".vidloc-tmp").glob("v.npy.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # some snippets in
    assert proc.poll() is None, "features ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not prov.exists()  # only a temporary file: nothing that looks finished
    left = list((tmp_path / "out" / ".vidloc-tmp").glob("v.npy.tmp-*"))
    assert left
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0
    assert f"removed {left[0]}: left by an interrupted job" in r.stderr  # the rerun cleans up after the killed job
    assert not (tmp_path / "out" / ".vidloc-tmp").exists()  # the temporary folder goes once empty
    feats = np.load(out)
    assert feats.shape == (24, 2048) and np.isfinite(feats).all()
    assert json.loads(prov.read_text())["n_snippets"] == 24


def test_nan_in_a_feature_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "annotations").mkdir()
    from pipeline.core.annotation_io import Annotations, Segment, write_table

    write_table(Annotations(["Jump"], [Segment("v1", "train", "Jump", 1, 2)]), tmp_path / "annotations")
    f = np.ones((10, 2048), np.float32)
    f[3, 7] = np.nan
    (tmp_path / "features").mkdir()
    np.save(tmp_path / "features" / "v1.npy", f)
    with pytest.raises(ValueError, match=r"features/v1\.npy: non-finite values"):
        training_set(tmp_path / "features", tmp_path / "annotations", "train")
    from pipeline.core.settings import LocalizeSettings
    from pipeline.localize import run

    s = TrainSettings()
    torch.save({"model": build_model(1, s).state_dict(), "classes": ["Jump"], "settings": s.__dict__,
                "feature_dim": 2048}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"features/v1\.npy: non-finite values"):
        run(str(tmp_path / "model.pt"), str(tmp_path / "features"), str(tmp_path), ["v1"], LocalizeSettings(),
            str(tmp_path / "d.json"), str(tmp_path / "s.npz"), progress=False)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = TrainSettings()
    torch.save({"model": build_model(1, s, 8).state_dict(), "classes": ["Jump"], "settings": s.__dict__,
                "feature_dim": 8, "extra": Payload()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable checkpoint \(UnpicklingError: Weights only"):
        load_model(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (np.random.default_rng(0).bytes(3000), "not a readable checkpoint"),
    (None, "not a checkpoint written by train: missing model, classes, settings, feature_dim"),
])
def test_unreadable_model_files_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)  # a valid torch file, not ours
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_made_on_other_inputs_or_unreadable_is_set_aside(tmp_path, capsys):
    from pipeline.train import train

    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((20, 16)).astype(np.float32) for _ in range(4)]
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    s = TrainSettings(iterations=6, batch_size=2, max_seqlen=20, pdmi_start_iter=2, seed=0)
    fresh = torch.load(train(feats, labels, ["a", "b"], s, tmp_path / "fresh", checkpoint_every=3),
                       weights_only=True)["model"]
    # a checkpoint from training on other features (say features.random_seed changed upstream)
    other = [f + 1 for f in feats]
    run = tmp_path / "run"
    _kill_after_checkpoint(other, labels, s, run)  # killed at iteration 3, on the other features
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # no declared output yet: a plain rerun resumes
    resumed = torch.load(train(feats, labels, ["a", "b"], s, run, checkpoint_every=3), weights_only=True)["model"]
    assert "made on other inputs" in capsys.readouterr().err
    assert all(torch.equal(fresh[k], resumed[k]) for k in fresh)
    assert list(run.glob("checkpoint.pt.set-aside-*"))
    # an unreadable checkpoint is set aside too, and training starts over
    (run / "checkpoint.pt").write_bytes(b"garbage")
    again = torch.load(train(feats, labels, ["a", "b"], s, run, checkpoint_every=3), weights_only=True)["model"]
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)


def _kill_after_checkpoint(feats, labels, s, out):
    """Write checkpoint.pt at iteration 3 of training on ``feats``, as a run killed after its first checkpoint."""
    from pipeline.train import train

    class Stop(Exception):
        pass

    import pipeline.train as t
    saved = t._save

    def save_then_stop(path, obj):
        saved(path, obj)
        if path.name == "checkpoint.pt":
            raise Stop

    t._save = save_then_stop
    try:
        train(feats, labels, ["a", "b"], s, out, checkpoint_every=3)
    except Stop:
        pass
    finally:
        t._save = saved


def test_an_unwritable_results_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the results folder should go")
    rc, out = snakemake(tmp_path, {"results_dir": str(blocker / "results")}, "-n", check=False)
    assert rc != 0 and f"results_dir {blocker / 'results' / 'demo'} is not writable" in out, out[-2000:]
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        rc, out = snakemake(tmp_path, {"results_dir": str(locked)}, "-n", check=False)
        assert rc != 0 and "is not writable" in out


@pytest.fixture
def full_disk(tmp_path):
    """A 4 MB tmpfs with 64 KB left (needs the right to mount, as root in CI)."""
    mnt = tmp_path / "small disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {r.stderr.strip()}")
    try:
        from pipeline.core.io import free_bytes

        (mnt / "filler").write_bytes(b"\0" * (free_bytes(mnt) - 64 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_is_named_with_the_path(full_disk, tmp_path):
    from pipeline.demo_data import write_video
    from pipeline.core.io import DiskFullError
    from pipeline.train import _save

    # torch.save's own error says "[enforce fail at inline_container.cc ...]": this says what happened
    with pytest.raises(DiskFullError, match=f"^{full_disk / 'run' / 'checkpoint.pt'}: no space left on device"):
        _save(full_disk / "run" / "checkpoint.pt", {"model": torch.zeros(1_000_000)})
    assert sorted(p.name for p in (full_disk / "run").iterdir()) == []  # no partial file left

    # a stage's job: one line naming the file, no traceback
    rng = np.random.default_rng(0)
    write_video(tmp_path / "v.mp4", [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(64)], 25)
    frames = full_disk / "decoded" / "v" / "frames.npy"
    r = subprocess.run([sys.executable, "-m", "pipeline.decode", str(tmp_path / "v.mp4"), "--frames", str(frames),
                        "--meta", str(tmp_path / "meta.json"), "--no-progress",
                        "--settings", json.dumps({"short_side": 112, "crop": 112})], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(f"decode: error: {frames}: no space left on device (")
    assert "Traceback" not in r.stderr


def test_a_features_file_of_the_wrong_width_names_the_file_and_the_shapes(tmp_path):
    """1024 columns copied from another extractor: training and localization stop naming the file, its shape
    and the expected one, not with a broadcast or conv1d traceback."""
    from pipeline.core.annotation_io import Annotations, Segment, write_table
    from pipeline.core.feature_files import FeatureFileError

    (tmp_path / "annotations").mkdir()
    write_table(Annotations(["Jump"], [Segment("v1", "train", "Jump", 1, 2), Segment("v2", "train", "Jump", 1, 2)]),
                tmp_path / "annotations")
    (tmp_path / "features").mkdir()
    np.save(tmp_path / "features" / "v1.npy", np.ones((10, 2048), np.float32))
    np.save(tmp_path / "features" / "v2.npy", np.ones((10, 1024), np.float32))
    expected = (r"features/v2\.npy: features of shape \(10, 1024\) and type float32; expected \(n_snippets, 2048\) "
                r"float32")
    with pytest.raises(FeatureFileError, match=expected):
        training_set(tmp_path / "features", tmp_path / "annotations", "train")
    from dataclasses import asdict

    from pipeline.localize import run
    from pipeline.core.settings import LocalizeSettings

    s = TrainSettings()
    torch.save({"model": build_model(1, s).state_dict(), "classes": ["Jump"], "settings": asdict(s),
                "feature_dim": 2048}, tmp_path / "model.pt")
    with pytest.raises(FeatureFileError, match=expected):
        run(str(tmp_path / "model.pt"), str(tmp_path / "features"), str(tmp_path), ["v2"], LocalizeSettings(),
            str(tmp_path / "d.json"), str(tmp_path / "s.npz"), progress=False)
    np.save(tmp_path / "features" / "v2.npy", np.ones((10, 2048), np.float64))
    with pytest.raises(FeatureFileError, match=r"shape \(10, 2048\) and type float64; expected"):
        training_set(tmp_path / "features", tmp_path / "annotations", "train")
