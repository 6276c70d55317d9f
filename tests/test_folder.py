"""Your own videos: the folder preset extracts features of any folder, and predicts with a trained model."""
import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import REPO, brightness_frames, garbage
from pipeline.demo_data import write_video
from test_workflow import QUICK_FLOW, snakemake

# Half resolution and few TV-L1 iterations, as the demo preset: a real run on real videos in seconds.
SMALL = {"decode": {"short_side": 128, "crop": 112}}


def folder_config(videos, results, **extra) -> dict:
    return {"preset": "folder", "videos": str(videos), "results_dir": str(results), **QUICK_FLOW,
            "presets": {"folder": SMALL}, **extra}


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory, bikes_mp4):
    """A researcher's folder: names with spaces and unicode, two containers, a corrupt file, a too-short clip."""
    d = tmp_path_factory.mktemp("own") / "my videos"
    d.mkdir()
    shutil.copy(bikes_mp4, d / "bikes in the park é.mp4")  # 10 s, 640x272, 25 fps
    rng = np.random.default_rng(0)
    frames = [np.clip(f.astype(int) + rng.integers(0, 40, f.shape), 0, 255).astype(np.uint8)
              for f in brightness_frames(40, h=96, w=128)]
    write_video(d / "clip two.mp4", frames, 25)
    (d / "clip two.mp4").rename(d / "clip two.mov")  # an MP4 stream in a .mov name: FFmpeg reads by content
    (d / "broken.mkv").write_bytes(garbage(4096))
    write_video(d / "tiny.mp4", frames[:5], 25)
    (d / "notes.txt").write_text("not a video")
    return d


@pytest.fixture(scope="module")
def folder_run(own_videos, tmp_path_factory):
    work = tmp_path_factory.mktemp("folder_run")
    snakemake(work, folder_config(own_videos, work / "results"))
    return work, work / "results" / "folder"


def test_features_for_every_readable_video_and_an_index(folder_run):
    _, out = folder_run
    bikes = np.load(out / "features" / "bikes in the park é.npy")
    clip = np.load(out / "features" / "clip two.npy")
    assert bikes.dtype == np.float32 and bikes.shape == (250 // 16, 2048) and np.isfinite(bikes).all()
    assert clip.shape == (40 // 16, 2048)
    prov = json.loads((out / "features" / "bikes in the park é.json").read_text())
    assert prov["sampling"] == {"fps": 25.0, "fps_setting": 25, "snippet_frames": 16, "snippet_stride": 16,
                                "short_side": 128, "crop": 112}
    from pipeline.core.run_files import read_index

    index = {r["video"]: r for r in read_index(out / "features" / "index.tsv")}
    assert set(index) == {"bikes in the park é", "clip two", "broken", "tiny"}  # notes.txt is not a video
    assert index["bikes in the park é"]["n_snippets"] == 15 and index["bikes in the park é"]["fps"] == 25
    assert index["bikes in the park é"]["duration_s"] == pytest.approx(10.0)
    assert index["broken"]["status"] == "skipped" and "broken.mkv" in index["broken"]["reason"]
    assert index["tiny"]["status"] == "skipped" and "too short" in index["tiny"]["reason"]
    skipped = {s["video"]: s for s in json.loads((out / "skipped_videos.json").read_text())["skipped"]}
    assert set(skipped) == {"broken", "tiny"}
    assert not (out / "report").exists() and not (out / "runs").exists()  # no annotations: nothing to train


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    rc, out = snakemake(tmp_path, folder_config(tmp_path / "nowhere", tmp_path / "r"), "-n", check=False)
    assert rc != 0 and f"videos folder {tmp_path / 'nowhere'}: no video files" in out
    rc, out = snakemake(tmp_path, {"preset": "folder", "results_dir": str(tmp_path / "r")}, "-n", check=False)
    assert rc != 0 and "preset folder needs a folder of videos: --config preset=folder videos=PATH" in out


def small_model(path, signature: dict, classes=("Jump", "Run")):
    """A briefly trained D2-Net recording ``signature``, as the train rule writes one."""
    from pipeline.core.settings import TrainSettings
    from pipeline.train import train

    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((20, 2048)).astype(np.float32) for _ in range(4)]
    labels = np.eye(len(classes), dtype=np.float32)[[0, 1, 0, 1]]
    s = TrainSettings(iterations=4, batch_size=2, max_seqlen=20, pdmi_start_iter=2)
    train(feats, labels, list(classes), s, path, feature_signature=signature)
    return path / "model.pt"


def signature_of(own_videos, results, **decode) -> dict:
    """What the workflow computes for the folder run (pipeline.workflow.rules.feature_signature), with other decode
    settings if given."""
    from pipeline.workflow import rules as wf

    words = folder_config(own_videos, results, presets={"folder": {"decode": {**SMALL["decode"], **decode}}})
    return wf.feature_signature(wf.resolve(wf.config_layers(REPO / "workflow_config.yaml", words=words)))


def test_predict_writes_detections_csv_timelines_and_a_page(folder_run, own_videos, tmp_path):
    work, out = folder_run
    model = small_model(tmp_path / "run", signature_of(own_videos, work / "results"))
    snakemake(work, folder_config(own_videos, work / "results", model=str(model)))
    pred = out / "predict"
    dets = json.loads((pred / "detections.json").read_text())
    assert set(dets["results"]) == {"bikes in the park é", "clip two"} and set(dets["skipped"]) == {"broken", "tiny"}
    for v, ds in dets["results"].items():
        for d in ds:
            assert d["label"] in ("Jump", "Run") and 0 <= d["segment"][0] < d["segment"][1] <= 10.25
    rows = (pred / "detections.csv").read_text().splitlines()
    assert rows[0] == "video,label,start_s,end_s,score"
    assert len(rows) - 1 == sum(len(d) for d in dets["results"].values())
    page = (pred / "index.html").read_text()
    for v in dets["results"]:
        assert (pred / "timelines" / f"{v}.png").stat().st_size > 1000
        assert f"timelines/{v}.png" in page
    # the viewer plays each source file by a path relative to the page (a space and an é in the name)
    import urllib.parse

    viewer = (pred / "viewer.html").read_text()
    data = json.loads(viewer.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert sorted(v["name"] for v in data["videos"]) == sorted(dets["results"])
    for v in data["videos"]:
        assert (pred / urllib.parse.unquote(v["src"])).resolve().is_file() and v["duration"] > 0


def test_predict_refuses_features_made_otherwise_naming_both(folder_run, own_videos, tmp_path):
    work, out = folder_run
    model = small_model(tmp_path / "run", signature_of(own_videos, work / "results", crop=224, short_side=256))
    rc, log = snakemake(work, folder_config(own_videos, work / "results", model=str(model)), check=False)
    assert rc != 0
    text = (out / "logs" / "predict.log").read_text()
    assert "trained on features made with other settings" in text
    assert "crop: model 224, these features 112" in text and "short_side: model 256, these features 128" in text
