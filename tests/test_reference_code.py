"""The reference_code profile: the authors' code's settings, and with them our losses and localization equal
the reference formulas (docs/d2net.md) on fixed inputs."""
import math

import numpy as np
import torch
from conftest import resolved
from pipeline.workflow import rules as wf


def profile(preset="thumos14"):
    return resolved(preset, experiments="reference_code")


def test_the_profile_carries_every_difference_of_the_code():
    config = profile()
    t = wf.train_settings(config, "reference_code")
    assert (t.batch_size, t.weight_decay, t.alpha, t.reference_pairing_rows) == (20, 0.0005, 0.1, True)
    paper = wf.train_settings(config, "d2net")
    assert (paper.batch_size, paper.weight_decay, paper.alpha, paper.reference_pairing_rows) == (10, 0.005, 0.2, False)
    loc = wf.localize_settings(config, "reference_code")
    assert (loc.threshold_values()[-1], loc.nms_iou, loc.keep_scope) == (0.475, 0.3, "class")
    assert wf.localize_settings(config, "d2net").threshold_values()[-1] == 0.5
    assert wf.evaluation_settings(config, "reference_code").protocol == "d2net"
    assert wf.evaluation_settings(config, "d2net").protocol == "activitynet"
    # its training selects on the test set, so it reads the localize and evaluation settings; the paper's does not
    assert wf.selection_args(config, "reference_code")[0] == "--localize" and wf.selection_args(config, "d2net") == []


def test_the_loss_is_l_dis_plus_a_tenth_of_each_denoising_term():
    from models.d2net import D2Net
    from models.losses import d2net_loss

    t = wf.train_settings(profile(), "reference_code")
    torch.manual_seed(0)
    model = D2Net(3, 2048)
    feats = torch.randn(4, 12, 2048)
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float32)
    out = model(feats)
    total, terms, _ = d2net_loss(out, torch.full((4,), 12), labels, torch.randn(1, 1024), t,
                                 iteration=t.pdmi_start_iter + 2)
    assert terms["ds"] != 0 or terms["dv"] != 0
    assert math.isclose(total.item(), terms["cls"] + 0.1 * terms["ds"] + 0.1 * terms["dv"], rel_tol=1e-5)


def reference_detections(tcam: np.ndarray) -> list[tuple[int, int, int, float]]:
    """detectionMAP.getDetections of the authors' code for THUMOS14, written from its description
    (docs/d2net.md): half-max class selection on top-k means, thresholds k/40 for k = 1..19, runs of
    at least 2 snippets, outer-inner contrast with 25% inflation, greedy NMS removing IoU >= 0.3,
    then scores of at least 10% of the best of the (video, class)."""
    T, C = tcam.shape
    k = max(1, int(T / 8))
    cs = np.sort(tcam, axis=0)[::-1][:k].mean(0)
    out = []
    for c in range(C):
        if not (cs[c] > cs.max() / 2 and cs[c] > 0):
            continue
        props = []
        for thr in [j / 40 for j in range(1, 20)]:
            above = list(tcam[:, c] > thr) + [False]
            s = None
            for t, a in enumerate(above):
                if a and s is None:
                    s = t
                elif not a and s is not None:
                    e = t
                    if e - s >= 2:
                        lt = max(1, int((e - s) / 4))
                        inner = tcam[s:e, c].mean()
                        sides = [tcam[max(0, s - lt):s, c].mean()] if s > 0 else []
                        sides += [tcam[e:min(T, e + lt), c].mean()] if e < T else []
                        outer = np.mean(sides) if sides else 0.0
                        score = inner - outer if sides else inner
                        if not sides or (outer - inner + 1) / 2 <= 0.7:
                            props.append((s, e, float(score)))
                    s = None
        kept = []
        for p in sorted(props, key=lambda p: -p[2]):
            iou = lambda a, b: len(set(range(a[0], a[1])) & set(range(b[0], b[1]))) / len(
                set(range(a[0], a[1])) | set(range(b[0], b[1])))
            if all(iou(p, q) < 0.3 for q in kept):
                kept.append(p)
        if kept:
            best = max(q[2] for q in kept)
            out += [(c, s, e, score) for s, e, score in kept if score >= 0.1 * best]
    return sorted(out)


def test_localization_with_the_profile_equals_the_reference_post_processing():
    from pipeline.compute.localization import localize

    rng = np.random.default_rng(3)
    loc = wf.localize_settings(profile(), "reference_code")
    for _ in range(20):
        tcam = np.clip(rng.normal(0.1, 0.08, (60, 4)), 0, 1)
        for c in range(4):
            for _ in range(rng.integers(0, 3)):
                a = int(rng.integers(0, 55))
                tcam[a:a + int(rng.integers(2, 12)), c] += rng.uniform(0.2, 0.6)
        tcam = np.clip(tcam, 0, 1)
        ours = sorted((int(c), int(a), int(b), round(float(s), 9)) for c, a, b, s in localize(tcam, loc, 8))
        ref = [(c, a, b, round(s, 9)) for c, a, b, s in reference_detections(tcam)]
        assert ours == ref
