"""Detection mAP: hand-computed cases, and equality with ActivityNet's evaluator on random sets."""
import numpy as np
import pytest

from pipeline.core.annotation_io import Annotations, Segment
from pipeline.core.metrics import EvaluationError, classification_map, evaluate

THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def ann(gt, classes=("Jump", "Run"), ambiguous=(), videos=("v1", "v2")):
    """Annotations of the test subset from (video, label, start, end) rows."""
    segs = [Segment(v, "test", c, s, e) for v, c, s, e in gt]
    amb = [Segment(v, "test", "Ambiguous", s, e) for v, s, e in ambiguous]
    return Annotations(list(classes), segs, amb, videos={v: ("test", 100.0) for v in videos})


def det(*rows):
    results = {}
    for v, c, s, e, score in rows:
        results.setdefault(v, []).append({"label": c, "score": score, "segment": [s, e]})
    return results


def test_perfect_detections_give_100():
    gt = [("v1", "Jump", 10, 20), ("v1", "Run", 30, 42.5), ("v2", "Jump", 5, 7)]
    m = evaluate(det(*[(v, c, s, e, 0.9) for v, c, s, e in gt]), ann(gt), "test", THUMOS_TIOU)
    assert all(x == 100 for x in m["map"].values()) and m["average_map"] == 100
    assert m["f1"]["f1"] == 1.0


def test_a_duplicate_is_a_false_positive():
    gt = [("v1", "Jump", 10, 20), ("v2", "Jump", 30, 40)]
    m = evaluate(det(("v1", "Jump", 10, 20, 0.9), ("v1", "Jump", 10, 20, 0.8), ("v2", "Jump", 30, 40, 0.7)),
                 ann(gt, classes=["Jump"]), "test", [0.5])
    # ranks: TP (p 1, r .5), duplicate FP (p .5), TP (p 2/3, r 1): AP = .5 * 1 + .5 * 2/3
    assert m["map"]["0.5"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3), abs=1e-3)
    assert m["f1"]["false_positives"] == 1 and m["f1"]["precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("shift, last_hit", [(2.0, 0.6), (5.0, 0.3), (0.5, 0.7), (9.5, None)])
def test_a_shifted_segment_crosses_each_threshold_where_expected(shift, last_hit):
    # tIoU of [10, 20] and [10 + s, 20 + s] is (10 - s) / (10 + s): 0.667, 0.333, 0.905, 0.026
    m = evaluate(det(("v1", "Jump", 10 + shift, 20 + shift, 0.9)), ann([("v1", "Jump", 10, 20)], ["Jump"]), "test",
                 THUMOS_TIOU)
    for t in THUMOS_TIOU:
        assert m["map"][f"{t:g}"] == (100 if last_hit is not None and t <= last_hit else 0), t


def test_a_label_missing_from_the_ground_truth_is_an_error_naming_it():
    with pytest.raises(EvaluationError, match="'Swim'"):
        evaluate(det(("v1", "Swim", 1, 2, 0.5)), ann([("v1", "Jump", 10, 20)]), "test", [0.5])


def test_a_video_outside_the_subset_is_an_error_naming_it():
    with pytest.raises(EvaluationError, match="'v9'"):
        evaluate(det(("v9", "Jump", 1, 2, 0.5)), ann([("v1", "Jump", 10, 20)]), "test", [0.5])


def test_an_empty_prediction_set_gives_zero():
    m = evaluate({}, ann([("v1", "Jump", 10, 20)]), "test", THUMOS_TIOU)
    assert m["average_map"] == 0 and m["f1"]["f1"] == 0 and m["n_detections"] == 0


def test_a_class_without_detections_scores_zero_and_one_without_ground_truth_is_left_out():
    gt = [("v1", "Jump", 10, 20), ("v1", "Run", 30, 40)]
    m = evaluate(det(("v1", "Jump", 10, 20, 0.9)), ann(gt, ["Jump", "Run", "Swim"]), "test", [0.5])
    assert m["ap_per_class"] == {"Jump": [100.0], "Run": [0.0]}
    assert m["map"]["0.5"] == 50


def test_ambiguous_segments_thumos_rule_and_d2net_rule():
    gt = [("v1", "Jump", 10, 20), ("v2", "Jump", 10, 20)]
    amb = [("v1", 50, 60)]
    dets = det(("v1", "Jump", 52, 58, 0.95), ("v1", "Jump", 10, 20, 0.9), ("v2", "Jump", 10, 20, 0.8))
    a = ann(gt, ["Jump"], amb)
    # without the rule the ambiguous hit is a top-ranked false positive: precision .5 then 2/3 at recall
    # .5 and 1, whose envelope is 2/3 throughout
    plain = evaluate(dets, ann(gt, ["Jump"]), "test", [0.5])
    assert plain["map"]["0.5"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert evaluate(dets, a, "test", [0.5])["map"]["0.5"] == 100
    grid = {"v1": 1.0, "v2": 1.0}
    assert evaluate(dets, a, "test", [0.5], protocol="d2net", snippet_s=grid)["map"]["0.5"] == 100


def test_d2net_protocol_takes_the_first_match_activitynet_the_best():
    gt = [("v1", "Jump", 0, 10), ("v1", "Jump", 4, 14)]
    dets = det(("v1", "Jump", 4, 14, 0.9), ("v1", "Jump", 0, 6, 0.8))
    # at tIoU .3 the top detection's first match is [0, 10] (tIoU 6/14), leaving [4, 14] to a detection it
    # overlaps by 2/14; ActivityNet pairs it with [4, 14] (tIoU 1) and the second with [0, 10] (0.6)
    a = ann(gt, ["Jump"])
    assert evaluate(dets, a, "test", [0.3])["map"]["0.3"] == 100
    assert evaluate(dets, a, "test", [0.3], protocol="d2net", snippet_s={"v1": 1.0, "v2": 1.0})["map"]["0.3"] == 50


def test_d2net_protocol_rounds_to_the_snippet_grid():
    # 0.64 s snippets: GT [1.0, 4.5] s -> snippets [2, 7); a detection [1.28, 3.84] s -> [2, 6): IoU 4/5
    a = ann([("v1", "Jump", 1.0, 4.5)], ["Jump"])
    dets = det(("v1", "Jump", 1.28, 3.84, 0.9))
    grid = {"v1": 0.64, "v2": 0.64}
    m = evaluate(dets, a, "test", [0.7, 0.8, 0.9], protocol="d2net", snippet_s=grid)
    assert m["map"] == {"0.7": 100, "0.8": 100, "0.9": 0}
    cont = evaluate(dets, a, "test", [0.7, 0.8, 0.9])  # continuous tIoU 2.56 / 3.5 = 0.73
    assert cont["map"] == {"0.7": 100, "0.8": 0, "0.9": 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_ambiguous", [False, True])
def test_equals_the_activitynet_evaluator(seed, with_ambiguous):
    """Random sets (bench/evaluate.py's generator, small): ours equals the transcribed ActivityNet loop."""
    from dataclasses import replace

    from conftest import load_bench

    bench = load_bench("evaluate")
    a, results = bench.synthetic(n_videos=30, n_classes=4, n_det=400, seed=seed)[:2]
    if not with_ambiguous:
        a = replace(a, ambiguous=[])
    thresholds = [round(t, 2) for t in np.linspace(0.1, 0.9, 9)]
    ours = evaluate(results, a, "test", thresholds)
    expected = bench.loop_map(results, a, thresholds)
    assert [ours["map"][f"{t:g}"] for t in thresholds] == pytest.approx(expected, abs=1e-3)


def test_classification_map():
    a = ann([("v1", "Jump", 1, 2), ("v2", "Run", 1, 2), ("v3", "Jump", 1, 2)], videos=("v1", "v2", "v3"))
    # Jump ranked v1, v2, v3: hits at 1 and 3 -> (1 + 2/3) / 2; Run ranked v2 first -> 1
    scores = {"v1": np.array([0.9, 0.1]), "v2": np.array([0.5, 0.8]), "v3": np.array([0.2, 0.3])}
    assert classification_map(scores, a, ["v1", "v2", "v3"]) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1) / 2,
                                                                              abs=1e-3)


def test_chance_level_keeps_the_detections_but_not_their_places():
    from pipeline.core.metrics import chance_level, placed_at_random

    gt = [(f"v{i}", "Jump", 10.0 + i, 14.0 + i) for i in range(1, 3)] + [("v1", "Run", 50, 53), ("v2", "Run", 70, 72)]
    dets = det(*[(v, c, s, e, 0.9) for v, c, s, e in gt])
    moved = placed_at_random(dets, {"v1": 100.0, "v2": 100.0}, seed=0)
    for v in dets:
        for a, b in zip(dets[v], moved[v]):
            assert a["label"] == b["label"] and a["score"] == b["score"]
            assert b["segment"][1] - b["segment"][0] == pytest.approx(a["segment"][1] - a["segment"][0])
            assert 0 <= b["segment"][0] and b["segment"][1] <= 100
    chance = chance_level(dets, ann(gt), "test", THUMOS_TIOU, "activitynet", {"v1": 100.0, "v2": 100.0})
    assert chance["average_map"] < 20 and chance["seeds"] == 5


def test_real_thumos14_test_set_ground_truth_scores_100_and_a_shift_loses_the_tight_thresholds():
    from conftest import thumos_dir
    from pipeline.core.annotation_io import read_thumos14_txt

    root = thumos_dir()
    a = read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"})
    test = [s for s in a.segments if s.subset == "test"]
    rows = [(s.video, s.label, s.start_s, s.end_s, 1.0 - i * 1e-6) for i, s in enumerate(test)]
    m = evaluate(det(*rows), a, "test", THUMOS_TIOU)
    assert m["n_ground_truth"] == 3358 and m["n_ambiguous"] > 0 and len(m["ap_per_class"]) == 20
    assert m["average_map"] == 100 and m["f1"]["f1"] == 1.0
    # The reference's protocol cannot score perfect detections 100: 17 of the 3358 ground truths are shorter
    # than half a 0.64 s snippet and round to empty index ranges, which nothing matches, and detections
    # touching an Ambiguous segment on the grid are dropped even when they are right.
    grid = {v: 16 / 25 for v in a.videos_in("test")}
    on_grid = evaluate(det(*rows), a, "test", THUMOS_TIOU, protocol="d2net", snippet_s=grid)
    assert 98 < on_grid["average_map"] < 100 and 3300 < on_grid["f1"]["true_positives"] <= 3358 - 17
    # Every segment 2 s late: short segments (under 2 s lose all overlap) fail first, long ones keep tIoU high.
    late = evaluate(det(*[(v, c, s + 2, e + 2, sc) for v, c, s, e, sc in rows]), a, "test", THUMOS_TIOU)
    maps = [late["map"][f"{t:g}"] for t in THUMOS_TIOU]
    assert maps == sorted(maps, reverse=True) and maps[0] > 50 and maps[-1] < 20


def test_classes_without_training_videos_are_named():
    from pipeline.core.annotation_io import Annotations, Segment
    from pipeline.core.metrics import unlearnable_classes

    ann = Annotations(["Jump", "Run", "Swim"],
                      [Segment("t1", "train", "Jump", 1, 2), Segment("v1", "test", "Jump", 1, 2),
                       Segment("v1", "test", "Swim", 3, 4), Segment("t2", "train", "Run", 1, 2)], [],
                      videos={"t1": ("train", 9.0), "t2": ("train", 9.0), "v1": ("test", 9.0)})
    assert unlearnable_classes(ann, "train", "test") == ["Swim"]
