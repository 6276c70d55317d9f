"""Localization numerics on hand-made TCAMs: proposals, outer-inner contrast, NMS, class selection."""
import json

import numpy as np
import pytest
import torch

from pipeline.compute.localization import bottom_up_attention, localize, nms, proposals, select_classes, to_results
from pipeline.core.run_files import read_scores
from pipeline.core.settings import LocalizeSettings
from pipeline.localize import run

ONE = LocalizeSettings(thresholds=(0.5, 0.5, 0.1))  # a single threshold


def test_thresholds_run_from_0025_to_05_inclusive():
    t = LocalizeSettings().threshold_values()
    assert len(t) == 20 and t[0] == 0.025 and t[-1] == 0.5
    assert LocalizeSettings(thresholds=(0.025, 0.475, 0.025)).threshold_values()[-1] == 0.475  # the reference's


def test_a_run_above_threshold_with_outer_inner_contrast():
    seq = np.zeros(20)
    seq[8:12] = 0.9  # 4 snippets: inflation max(1, int(4 * .25)) = 1 snippet each side
    seq[7] = 0.3
    p = proposals(seq, ONE)
    assert p.shape == (1, 3)
    start, end, score = p[0]
    assert (start, end) == (8, 12)
    assert score == pytest.approx(0.9 - (0.3 + 0.0) / 2)


def test_short_runs_are_dropped_and_a_whole_video_run_scores_its_mean():
    seq = np.zeros(10)
    seq[3] = 0.9  # one snippet: shorter than min_snippets
    assert len(proposals(seq, ONE)) == 0
    p = proposals(np.full(6, 0.8), ONE)  # no outer region: the score is the inner mean
    assert p.tolist() == [[0, 6, pytest.approx(0.8)]]


def test_poor_contrast_is_dropped():
    seq = np.full(30, 0.45)
    seq[10:20] = 0.55  # inner .55, outer .45: (outer - inner + 1) / 2 = .45, kept
    assert len(proposals(seq, ONE)) == 1
    strict = LocalizeSettings(thresholds=(0.5, 0.5, 0.1), max_contrast=0.4)
    assert len(proposals(seq, strict)) == 0


def test_nms_keeps_the_best_of_overlapping_proposals():
    props = np.array([[0, 10, 0.5], [1, 10, 0.9], [20, 25, 0.3], [0, 4, 0.2]])
    # [1, 10) vs [0, 10): IoU .9 -> removed; [0, 4) vs [1, 10): 3 / 10 -> kept at 0.5, removed at 0.3
    assert nms(props, 0.5).tolist() == [1, 2, 3]
    assert nms(props, 0.3).tolist() == [1, 2]


def test_class_selection_half_max_and_top2():
    tcam = np.zeros((16, 4))
    tcam[:, 0], tcam[:, 1], tcam[:, 2] = 0.8, 0.5, 0.3
    assert select_classes(tcam, 8, "half_max").tolist() == [True, True, False, False]
    tcam[:, 3] = 0.7
    assert select_classes(tcam, 8, "top2").tolist() == [True, False, False, True]  # th = max(.5, third .5)


def test_bottom_up_attention():
    bg = np.array([1.0, 0.0])
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    assert bottom_up_attention(emb, bg).tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert bottom_up_attention(emb, bg, rescale=True).tolist() == pytest.approx([0.0, 1.0, 2.0])


def test_localize_keeps_detections_above_a_tenth_of_the_best():
    tcam = np.zeros((40, 2))
    tcam[5:15, 0] = 0.9
    tcam[25:30, 1] = 0.8
    tcam[32:34, 0] = 0.06  # weak: only the lowest thresholds see it
    dets = localize(tcam, LocalizeSettings(), topk_divisor=8)
    assert dets[:, 3].min() >= 0.1 * dets[:, 3].max()
    best = dets[np.argmax(dets[:, 3])]
    assert best[:3].tolist() == [0, 5, 15]
    res = to_results(dets, ["a", "b"], 0.64)
    assert res[0] == {"label": "a", "score": pytest.approx(0.9, abs=1e-6), "segment": [3.2, 9.6]}


def test_the_stage_writes_activitynet_results_and_scores(tmp_path):
    from pipeline.compute.checkpoint import build_model
    from pipeline.core.settings import TrainSettings

    s = TrainSettings(dropout=0.0)
    model = build_model(2, s, feature_dim=2048)
    torch.save({"model": model.state_dict(), "classes": ["a", "b"], "settings": s.__dict__, "feature_dim": 2048},
               tmp_path / "model.pt")
    feats = tmp_path / "features"
    feats.mkdir()
    for v, t in (("v1", 30), ("v2", 0)):
        np.save(feats / f"{v}.npy", np.random.default_rng(0).standard_normal((t, 2048)).astype(np.float32))
        (tmp_path / "decoded" / v).mkdir(parents=True)
        (tmp_path / "decoded" / v / "meta.json").write_text(json.dumps({"snippet_duration_s": 0.64}))
    run(str(tmp_path / "model.pt"), str(feats), str(tmp_path / "decoded"), ["v1", "v2"], LocalizeSettings(),
        str(tmp_path / "detections.json"), str(tmp_path / "scores.npz"), progress=False)
    results = json.loads((tmp_path / "detections.json").read_text())["results"]
    assert set(results) == {"v1"}  # a video without snippets has no detections
    for d in results["v1"]:
        assert d["label"] in ("a", "b") and 0 <= d["segment"][0] < d["segment"][1] <= 30 * 0.64
    scores, snippet_s = read_scores(tmp_path / "scores.npz")
    assert scores["v1"].shape == (2,) and snippet_s == {"v1": 0.64}


def test_an_unknown_setting_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown localization setting.s.: nms_iuo"):
        LocalizeSettings.from_dict({"nms_iuo": 0.3})
    assert LocalizeSettings.from_dict({"thresholds": [0.1, 0.5, 0.1]}).thresholds == (0.1, 0.5, 0.1)


def test_detections_of_overlapping_snippets_end_one_window_after_the_last_start():
    from pipeline.compute.localization import to_results

    dets = np.array([[1, 2, 5, 0.9]])  # class 1, snippets 2..4
    (d,) = to_results(dets, ["a", "b"], 0.16, 0.64)  # 16 frames every 4 at 25 fps
    assert d["label"] == "b" and d["segment"] == [0.32, 1.28]
    (d,) = to_results(dets, ["a", "b"], 0.64)  # no overlap: [2, 5) * 0.64
    assert d["segment"] == [1.28, 3.2]


def test_keep_fraction_of_the_video_best_or_of_each_class_best():
    from dataclasses import replace

    from pipeline.compute.localization import localize

    tcam = np.zeros((40, 2))
    tcam[5:10, 0] = 0.9  # class 0: one sharp action, contrast about 0.9
    tcam[:, 1] = 0.5
    tcam[25:30, 1] = 0.56  # class 1: a faint bump, contrast 0.06: under 10% of 0.9, not of its class's best
    s = replace(LocalizeSettings(), thresholds=(0.025, 0.5, 0.025))
    video = localize(tcam, replace(s, keep_scope="video"), topk_divisor=8)
    per_class = localize(tcam, replace(s, keep_scope="class"), topk_divisor=8)
    bump = lambda d: any((c, a, b) == (1, 25, 30) for c, a, b, _ in d)
    assert not bump(video) and bump(per_class)
