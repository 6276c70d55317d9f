"""The report: localize -> evaluate -> report on a small run, and the HTML as a browser renders it."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from pipeline.core.annotation_io import Annotations, Segment, write_table
from pipeline.core.metrics import chance_level, evaluate, load_detections
from pipeline.core.io import atomic_write_json
from pipeline.core.run_files import read_lengths_s, read_scores
from pipeline.core.settings import LocalizeSettings
from pipeline.localize import run as localize
from pipeline.report import run as report
from pipeline.compute.checkpoint import build_model
from pipeline.core.settings import TrainSettings


@pytest.fixture
def small_run(tmp_path):
    """Two experiments of a random 2-class D2-Net over 3 test videos, evaluated, with their files in place."""
    classes = ["Jump", "Run"]
    videos = ["v1", "v2", "v3"]
    segs = [Segment("v1", "test", "Jump", 2.0, 6.0), Segment("v2", "test", "Run", 1.0, 3.2),
            Segment("v3", "test", "Jump", 4.0, 9.0)]
    ann = Annotations(classes, segs, [Segment("v3", "test", "Ambiguous", 10.0, 11.0)],
                      videos={v: ("test", 15.0) for v in videos})
    write_table(ann, tmp_path / "annotations")
    rng = np.random.default_rng(0)
    (tmp_path / "features").mkdir()
    for v in videos:
        np.save(tmp_path / "features" / f"{v}.npy", rng.standard_normal((23, 2048)).astype(np.float32))
        (tmp_path / "decoded" / v).mkdir(parents=True)
        (tmp_path / "decoded" / v / "meta.json").write_text(json.dumps({"snippet_duration_s": 0.64}))
        atomic_write_json(tmp_path / "features" / f"{v}.json", {
            "status": "ok", "provenance": "I3D RGB: kinetics400; flow: random (RANDOM WEIGHTS: not meaningful)",
            "flow_settings": {"backend": "torch"}})
    atomic_write_json(tmp_path / "skipped.json", {"skipped": [{"video": "v4", "stage": "decode",
                                                               "reason": "v4.mp4: cannot open as a video"}]})
    s = TrainSettings(dropout=0.0)
    for i, name in enumerate(["d2net", "ce_only"]):
        torch.manual_seed(i)
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        torch.save({"model": build_model(2, s, 2048).state_dict(), "classes": classes, "settings": s.__dict__,
                    "feature_dim": 2048}, run / "model.pt")
        localize(str(run / "model.pt"), str(tmp_path / "features"), str(tmp_path / "decoded"), videos,
                 LocalizeSettings(), str(run / "detections.json"), str(run / "scores.npz"), progress=False)
        scores, snippet_s = read_scores(run / "scores.npz")
        results = load_detections(run / "detections.json")
        metrics = evaluate(results, ann, "test", [0.1, 0.3, 0.5, 0.7], video_scores=scores)
        metrics["chance"] = chance_level(results, ann, "test", [0.1, 0.3, 0.5, 0.7], "activitynet",
                                         read_lengths_s(run / "scores.npz"))
        atomic_write_json(run / "metrics.json", metrics)
    return tmp_path


def make_report(root):
    report("demo", ["d2net", "ce_only"], str(root / "runs"), str(root / "annotations"), "test",
           str(root / "skipped.json"), sorted(str(p) for p in (root / "features").glob("*.json")),
           str(root / "report"), 2)
    return root / "report"


def test_the_report_writes_the_viewer_of_every_run(small_run):
    out = make_report(small_run)
    page = (out / "viewer.html").read_text()
    data = json.loads(page.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [v["name"] for v in data["videos"]] == ["v1", "v2", "v3"] and set(data["runs"]) == {"d2net", "ce_only"}
    assert data["videos"][0]["gt"] == [["Jump", 2.0, 6.0]] and all(v["duration"] > 0 for v in data["videos"])


def test_report_has_the_table_provenance_skipped_videos_and_plots(small_run):
    out = make_report(small_run)
    md = (out / "report.md").read_text()
    assert md.splitlines()[0].startswith("**I3D RGB: kinetics400; flow: random (RANDOM WEIGHTS")
    assert "| experiment | mAP@0.1 | mAP@0.3 | mAP@0.5 | mAP@0.7 | avg | F1@0.5 | cls mAP |" in md
    assert "| d2net |" in md and "| ce_only |" in md and "| chance (d2net's detections placed at random) |" in md
    assert "- v4 (decode): v4.mp4: cannot open as a video" in md
    for png in ("ap_per_class.png", "pr_curve.png", "timelines.png", "learning_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 4 and html.count("data:image/png;base64,") == 4  # self-contained
    assert "<table>" in html and "<td>d2net</td>" in html and "class='prov warn'" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_headless_browser_renders_the_table_and_images(small_run, tmp_path_factory):
    if CHROMIUM is None:
        # CI (.ci/run) installs chromium and sets this, so there the test cannot pass by skipping.
        if os.environ.get("VIDLOC_CI") == "1":
            pytest.fail("VIDLOC_CI=1 (.ci/run) but no chromium on PATH (apt-get install chromium)")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    out = make_report(small_run)
    shot = out / "screenshot.png"
    profile = tmp_path_factory.mktemp("chromium")
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    # The DOM after rendering: every image decoded (naturalWidth > 0) and the table laid out.
    probe = out / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", (
        "<script>window.onload=()=>{const ok=[...document.images].every(i=>i.complete&&i.naturalWidth>0);"
        "const t=document.querySelector('table');document.title='RENDERED images='+document.images.length+"
        "' ok='+ok+' rows='+t.rows.length+' width='+t.offsetWidth;}</script></body>")))
    dom = subprocess.run(common + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert "<title>RENDERED images=4 ok=true rows=4 width=" in dom.stdout, dom.stderr[-2000:]
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1200,2400", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (2400, 1200) and img.std() > 20  # not a blank page


def test_an_experiment_set_labels_the_rows_as_the_paper_table():
    from pipeline.report import markdown, table_rows

    m = {"tiou_thresholds": [0.5], "map": {"0.5": 30.0}, "average_map": 30.0, "f1": {"f1": 0.4}}
    header, rows = table_rows({"ce": m, "dis_ld": m}, {"ce": "L_CE", "dis_ld": "L_Dis + L_D"})
    assert [r[0] for r in rows] == ["L_CE (ce)", "L_Dis + L_D (dis_ld)"]
    md = markdown("t", [], {"ce": m}, [], {}, [], labels={"ce": "L_CE"}, caption="Table 3: the losses")
    assert "## Table 3: the losses" in md and "| L_CE (ce) | 30.0 |" in md


def test_the_seeds_of_an_experiment_share_a_row_of_mean_and_std():
    from pipeline.report import table_rows

    def m(x):
        return {"tiou_thresholds": [0.5], "map": {"0.5": x}, "average_map": x, "f1": {"f1": x / 100}}

    metrics = {"d2net.s1": m(30.0), "d2net.s2": m(34.0), "ce_only.s1": m(20.0), "ce_only.s2": m(20.0)}
    groups = {"d2net.s1": "d2net", "d2net.s2": "d2net", "ce_only.s1": "ce_only", "ce_only.s2": "ce_only"}
    _, rows = table_rows(metrics, None, groups)
    assert rows[0][:3] == ["d2net, 2 seeds", "32.0 ± 2.8", "32.0 ± 2.8"] and rows[1][1] == "20.0 ± 0.0"


def test_ground_truth_on_skipped_videos_is_counted_for_the_report():
    from pipeline.report import skipped_ground_truth

    ann = Annotations(["Jump"], [Segment("v1", "test", "Jump", 1.0, 2.0), Segment("v1", "test", "Jump", 3.0, 4.0),
                                 Segment("v2", "test", "Jump", 1.0, 2.0), Segment("t1", "train", "Jump", 1.0, 2.0)],
                      [], videos={"v1": ("test", 9.0), "v2": ("test", 9.0), "t1": ("train", 9.0)})
    skipped = [{"video": "v1", "stage": "decode", "reason": "corrupt"}, {"video": "t1", "stage": "decode", "reason": "x"}]
    assert skipped_ground_truth(ann, "test", skipped) == (2, 1)
