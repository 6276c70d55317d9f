"""D2-Net's model and loss terms on tiny inputs, with values computed by hand."""
import math

import numpy as np
import pytest
import torch

from models.d2net import D2Net
from models.losses import (attention, classification_loss, pair_terms, pdmi, snippet_denoise_loss,
                           update_running_bg, video_denoise_loss, video_scores, weighted_embeddings)



@pytest.fixture(autouse=True)
def float64():
    """Hand-computed values are compared in double precision; restored for the other test files."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_model_streams_and_shapes():
    torch.manual_seed(0)
    m = D2Net(3).eval()
    x = torch.randn(2, 10, 2048)
    out = m(x)
    assert out.tcam.shape == (2, 10, 3) and out.embedding.shape == (2, 10, 1024)
    assert torch.allclose(out.tcam, (torch.sigmoid(out.logits_rgb) + torch.sigmoid(out.logits_flow)) / 2)
    # The streams are independent: changing the flow half changes only the flow logits.
    y = x.clone()
    y[..., 1024:] += 1
    out2 = m(y)
    assert torch.equal(out.logits_rgb, out2.logits_rgb) and not torch.equal(out.logits_flow, out2.logits_flow)
    assert "running_bg" in m.state_dict() and not any(n == "running_bg" for n, _ in m.named_parameters())
    anet = D2Net(100, kernel_size=5, dilation=2, classifier_kernel_size=5, classifier_dilation=2)
    assert anet(torch.randn(1, 30, 2048)).tcam.shape == (1, 30, 100)


def test_video_scores_topk_by_hand():
    tcam = torch.tensor([[[0.9], [0.1], [0.5], [0.7], [0.2], [0.0], [0.99], [0.99], [0.99]]]).transpose(0, 0)
    tcam = tcam.reshape(1, 9, 1)
    # 6 valid snippets (the padding 0.99s ignored), k = ceil(6/4) = 2: mean(0.9, 0.7) = 0.8
    assert video_scores(tcam, torch.tensor([6]), 4).item() == pytest.approx(0.8)
    # k = ceil(6/8) = 1: 0.9; scores are clamped to [1e-3, 1 - 1e-3]
    assert video_scores(tcam, torch.tensor([6]), 8).item() == pytest.approx(0.9)
    assert video_scores(torch.ones(1, 4, 1), torch.tensor([4]), 8).item() == pytest.approx(1 - 1e-3)


def test_attention_and_embeddings_by_hand():
    tcam = torch.tensor([[[0.8, 0.1], [0.3, 0.2], [0.1, 0.6], [0.05, 0.1], [0.9, 0.9]]])
    fg, bg, top = attention(tcam, torch.tensor([4]), bg_threshold=0.5)
    assert fg.tolist() == [[0.8, 0.0, 0.6, 0.0, 0.0]]  # lambda >= 0.5, padding excluded
    assert torch.allclose(bg, torch.tensor([[0.0, 0.7, 0.0, 0.9, 0.0]]))
    assert top.tolist() == [3]
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 1.0], [9.0, 9.0]]])
    x, has = weighted_embeddings(emb, fg)
    assert has.tolist() == [True] and torch.allclose(x, torch.tensor([[(0.8 + 1.8) / 1.4, 0.6 / 1.4]]))
    _, has_none = weighted_embeddings(emb, torch.zeros(1, 5))
    assert has_none.tolist() == [False]


def cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_pair_terms_by_hand_and_the_row_fix():
    x_fg = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # video 1 has no foreground
    has_fg = torch.tensor([True, False, True])
    x_bg = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 1.0]])
    has_bg = torch.tensor([True, True, True])
    # fg list = videos [0, 2] paired by swapping; bg list [0, 1, 2] rotated; sampled fg-bg pairs:
    # fg list positions [1, 0] (videos 2, 0) with bg list positions [0, 2] (videos 0, 2).
    perms = (torch.tensor([1, 0]), torch.tensor([1, 2, 0]), torch.tensor([1, 0]), torch.tensor([0, 2, 1]))
    wt = pair_terms(x_fg, has_fg, x_bg, has_bg, perms=perms)
    fgc = 1 - cos([1, 0], [1, 1])
    assert wt[0, 0].item() == pytest.approx(fgc) and wt[2, 0].item() == pytest.approx(fgc) and wt[1, 0] == 0
    assert wt[:, 1].tolist() == pytest.approx([1 - cos([0, 1], [1, 2]), 1 - cos([1, 2], [2, 1]),
                                               1 - cos([2, 1], [0, 1])])
    # Separation: video 2's fg with video 0's bg, video 0's fg with video 2's bg (clamped at 0).
    assert wt[2, 2].item() == pytest.approx(max(0, cos([1, 1], [0, 1])))
    assert wt[0, 2].item() == pytest.approx(max(0, cos([1, 0], [2, 1])))
    assert wt[1, 2] == 0
    # The reference's bug puts the terms on rows 1 and 0 (positions in the fg list), not videos 2 and 0.
    bug = pair_terms(x_fg, has_fg, x_bg, has_bg, perms=perms, reference_pairing_rows=True)
    assert bug[1, 2].item() == pytest.approx(wt[2, 2].item()) and bug[2, 2] == 0


def test_classification_loss_by_hand():
    p = torch.tensor([[0.8, 0.3], [0.4, 0.9]])
    y = torch.tensor([[1, 0], [0, 1]])
    wt = torch.tensor([[0.2, 0.1, 0.5], [0.0, 0.3, 0.0]])
    g, beta, C = 0.01, 2.0, 2

    def term(pv, yv, w):
        pos = (1 - pv + w[2] + g * w[0]) ** beta * math.log(pv)
        neg = (pv + w[2] + g * w[1]) ** beta * math.log(1 - pv)
        return -(C * pos if yv else neg)

    want = np.mean([term(p[i, j].item(), y[i, j].item(), wt[i].tolist()) for i in range(2) for j in range(2)])
    assert classification_loss(p, y, wt, g, beta).item() == pytest.approx(want)
    ce = np.mean([-(C * math.log(0.8)), -math.log(0.7), -math.log(0.6), -(C * math.log(0.9))])
    assert classification_loss(p, y, None, g, 0.0).item() == pytest.approx(ce)  # plain (weighted) CE
    focal = np.mean([term(p[i, j].item(), y[i, j].item(), [0, 0, 0]) for i in range(2) for j in range(2)])
    assert classification_loss(p, y, None, g, beta).item() == pytest.approx(focal)


def test_pdmi_by_hand():
    O = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    y = torch.tensor([0, 0, 1])
    U = np.array([[0.8, 0.2], [0.2, 0.8]])  # row k: mean of O over samples of class k
    s = np.linalg.svd(U, compute_uv=False)
    assert pdmi(O, y, 2).item() == pytest.approx(math.log(s.max() / s.min()))  # log(1.0 / 0.6)
    assert pdmi(O, torch.tensor([0, 0, 0]), 2).item() == 0  # an empty class
    assert pdmi(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), torch.tensor([0, 1]), 2).item() == 0  # rank deficient


def test_video_denoise_by_hand():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    y = torch.tensor([[1, 0], [0, 1]])
    r = np.array([[1.0, 0.0], [0.2, 0.8]]) / np.array([[1.0], [1.0]])  # 0.1 < 0.2 x 0.9 is masked out
    s = np.linalg.svd(np.eye(2) @ r, compute_uv=False)
    assert video_denoise_loss(p, y).item() == pytest.approx(math.log(s.max() / s.min()))
    single_class = torch.tensor([[1, 0], [1, 0]])
    assert math.isfinite(video_denoise_loss(p, single_class).item())


def test_degenerate_batches_are_finite_and_differentiable():
    torch.manual_seed(0)
    m = D2Net(3)
    for case in ("no_foreground", "all_background", "single_class"):
        feats = torch.randn(3, 8, 2048, requires_grad=False)
        out = m(feats)
        tcam = out.tcam
        if case == "no_foreground":
            tcam = tcam * 0.1  # lambda < 0.5 everywhere
        if case == "all_background":
            tcam = tcam * 0.0
        labels = torch.tensor([[1, 0, 0]] * 3) if case == "single_class" else torch.eye(3, dtype=torch.long)
        seq = torch.tensor([8, 6, 5])
        p = video_scores(tcam, seq, 8)
        fg, bg, top = attention(tcam, seq, 0.5)
        xf, hf = weighted_embeddings(out.embedding, fg)
        xb, hb = weighted_embeddings(out.embedding, bg)
        wt = pair_terms(xf, hf, xb, hb, torch.Generator().manual_seed(0))
        total = (classification_loss(p, labels, wt) + snippet_denoise_loss(tcam, out.embedding, seq, labels,
                 torch.randn(1, 1024)) + video_denoise_loss(p, labels))
        assert torch.isfinite(total), case
        total.backward()
        assert all(torch.isfinite(q.grad).all() for q in m.parameters() if q.grad is not None), case
        m.zero_grad()


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    p = torch.rand(3, 2).clamp(0.1, 0.9).requires_grad_()
    y = torch.tensor([[1, 0], [0, 1], [1, 1]])
    wt = (torch.rand(3, 3) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: classification_loss(a, y, b), (p, wt))
    O = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], requires_grad=True)
    assert torch.autograd.gradcheck(lambda o: pdmi(o, torch.tensor([0, 0, 1, 1]), 2), (O,))


def test_running_background():
    bg = torch.zeros(1, 2)
    bg = update_running_bg(bg, torch.tensor([[1.0, 3.0], [3.0, 1.0]]))
    assert bg.tolist() == [[pytest.approx(0.2), pytest.approx(0.2)]]
    assert torch.equal(update_running_bg(bg, torch.zeros(0, 2)), bg)


def test_the_settings_module_names_every_loss_variant():
    """pipeline/core/settings.py validates variants without importing torch: its list must be models/losses.py's."""
    from models.losses import VARIANTS
    from pipeline.core.settings import LOSS_VARIANTS

    assert set(LOSS_VARIANTS) == set(VARIANTS)
