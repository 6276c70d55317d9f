"""D2-Net's losses: the discriminative loss L_Dis and the denoising loss L_D = L_DS + L_DV (pDMI).

Pure functions of tensors, following the reference code (naraysa/D2-Net
train.py and pdmi.py; docs/d2net.md)
with its bugs fixed where noted:

- FIX (pairing rows): the reference writes the fg-bg separation term of the
  m sampled pairs to rows ``fg_idx`` of the weight table, which index the
  list of videos *with* a foreground embedding, not the batch: whenever a
  video has no foreground the terms land on the wrong videos. Here they go
  to the right rows; ``reference_pairing_rows=True`` reproduces the bug.
- pDMI's log condition number is inf/NaN for a rank-deficient matrix; the
  reference replaces a non-finite loss by 0, and so does this code, per
  term, so one degenerate video does not zero the whole batch's loss.

Inputs: ``tcam`` (B, T, C) probabilities, ``emb`` (B, T, D) embeddings,
``seq_len`` (B,) valid lengths, ``labels`` (B, C) multi-hot.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS_P = 1e-3  # video scores are clamped to [EPS_P, 1 - EPS_P] before the logs


def _valid(seq_len: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=seq_len.device)[None, :] < seq_len[:, None]  # (B, T)


def video_scores(tcam: torch.Tensor, seq_len: torch.Tensor, topk_divisor: int) -> torch.Tensor:
    """Top-k MIL pooling: per video and class, the mean of the k = ceil(T_i / divisor) largest TCAM values."""
    b, t, c = tcam.shape
    valid = _valid(seq_len, t)[..., None]
    ranked = tcam.masked_fill(~valid, -math.inf).sort(dim=1, descending=True).values
    k = torch.ceil(seq_len.float() / topk_divisor).clamp(min=1)
    take = torch.arange(t, device=tcam.device)[None, :, None] < k[:, None, None]
    p = ranked.masked_fill(~take, 0.0).sum(1) / k[:, None]
    return p.clamp(EPS_P, 1 - EPS_P)


def attention(tcam: torch.Tensor, seq_len: torch.Tensor, bg_threshold: float, fg_threshold: float = 0.5):
    """Top-down attention lambda_t = max_c TCAM and its thresholded foreground / background weights.

    Returns (fg (B,T), bg (B,T), bg_top (B,)): lambda where lambda >= fg_threshold; 1 - lambda where
    1 - lambda >= bg_threshold; and each video's most background snippet (before thresholding).
    lambda is not detached, as in the reference: the embedding terms also train the TCAM.
    """
    lam = tcam.max(dim=-1).values
    valid = _valid(seq_len, lam.shape[1])
    fg = torch.where(valid & (lam >= fg_threshold), lam, torch.zeros_like(lam))
    bg_raw = 1 - lam
    bg = torch.where(valid & (bg_raw >= bg_threshold), bg_raw, torch.zeros_like(lam))
    bg_top = bg_raw.masked_fill(~valid, -math.inf).argmax(dim=1)
    return fg, bg, bg_top


def weighted_embeddings(emb: torch.Tensor, weights: torch.Tensor):
    """Attention-weighted mean embedding per video, and whether it exists (weights sum > 0)."""
    total = weights.sum(1)
    has = total > 0
    x = (emb * weights[..., None]).sum(1) / total.clamp(min=1e-12)[:, None]
    return x, has


def pair_terms(x_fg, has_fg, x_bg, has_bg, generator: torch.Generator | None = None,
               reference_pairing_rows: bool = False, perms=None) -> torch.Tensor:
    """(B, 3) embedding terms: 1 - cos(fg_i, fg_pi(i)), 1 - cos(bg_i, bg_pi'(i)), max(0, cos(fg_a, bg_b)).

    Pairs are random permutations inside the batch, class-agnostic, as in the reference. ``perms``
    = (fg_perm, bg_perm, fg_pick, bg_pick) replaces the random draws (for tests).
    """
    b = x_fg.shape[0]
    wt = x_fg.new_zeros(b, 3)
    fg_rows, bg_rows = has_fg.nonzero().flatten(), has_bg.nonzero().flatten()
    n_fg, n_bg = len(fg_rows), len(bg_rows)
    draw = lambda n: torch.randperm(n, generator=generator, device="cpu").to(x_fg.device)
    fg_perm, bg_perm, fg_pick, bg_pick = perms if perms is not None else (draw(n_fg), draw(n_bg), draw(n_fg),
                                                                         draw(n_bg))
    f, g = x_fg[fg_rows], x_bg[bg_rows]
    if n_fg:
        wt = wt.index_put((fg_rows, torch.zeros_like(fg_rows)), 1 - F.cosine_similarity(f, f[fg_perm], dim=1))
    if n_bg:
        wt = wt.index_put((bg_rows, torch.ones_like(bg_rows)), 1 - F.cosine_similarity(g, g[bg_perm], dim=1))
    m = min(n_fg, n_bg)
    if m:
        a, c = fg_pick[:m], bg_pick[:m]
        sep = F.cosine_similarity(f[a], g[c], dim=1).clamp(min=0)
        rows = a if reference_pairing_rows else fg_rows[a]  # the reference's bug indexed the fg list
        wt = wt.index_put((rows, torch.full_like(rows, 2)), sep)
    return wt


def classification_loss(p: torch.Tensor, labels: torch.Tensor, wt: torch.Tensor | None = None,
                        compactness_weight: float = 0.01, focal_exponent: float = 2.0) -> torch.Tensor:
    """Positive-weighted BCE on video scores, focal-modulated, with the embedding terms inside the modulation.

    wt None and focal_exponent 0: cross-entropy only; wt None: focal only; with wt: L_Dis.
    Positives weigh C (the class count), negatives 1, as in the reference.
    """
    y = labels.to(p.dtype)
    zero = p.new_zeros(p.shape[0], 1)
    fgc, bgc, sep = (wt[:, [i]] for i in range(3)) if wt is not None else (zero, zero, zero)  # pair_terms order
    pos = (1 - p + sep + compactness_weight * fgc).pow(focal_exponent) * y * torch.log(p)
    neg = (p + sep + compactness_weight * bgc).pow(focal_exponent) * (1 - y) * torch.log(1 - p)
    weight = torch.where(y > 0, float(y.shape[1]), 1.0)
    return (-(pos + neg) * weight).mean()


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def pdmi(O: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Log condition number of the class-conditional joint matrix U = mean_{y=k} O (rows), as the reference.

    0 when a class has no samples or U is rank deficient. Rank deficiency is judged as numpy's
    ``matrix_rank`` does (smallest singular value <= largest * max(U.shape) * eps): LAPACK builds
    return an exact 0 there (log -> inf, which the reference zeroes) or a rounding residue such as
    1e-17 (log -> 38), depending on the CPU.
    """
    Y = F.one_hot(y, n_classes).T.to(O.dtype)
    counts = Y.sum(1)
    if bool((counts == 0).any()):
        return O.sum() * 0
    U = ((Y / counts[:, None]) @ O).clamp(min=1e-10)
    s = torch.linalg.svdvals(U)
    if bool(s.min() <= s.max() * max(U.shape) * torch.finfo(U.dtype).eps):
        return O.sum() * 0
    return _finite_or_zero(torch.log(s.max() / s.min()))


def _pointwise_denoise(kind: str, prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return (prob - target).abs().mean()
    if kind == "bce":
        return F.binary_cross_entropy(prob.clamp(EPS_P, 1 - EPS_P), target)
    raise ValueError(f"unknown denoising loss {kind!r}")


def snippet_denoise_loss(tcam, emb, seq_len, labels, bg_mean, fg_threshold: float = 0.5,
                         bg_threshold: float = 0.5, kind: str = "pdmi") -> torch.Tensor:
    """L_DS: pseudo-labels from bottom-up attention against the reference background, per video.

    lambda'_t = (1 - cos(x_t, bg_mean)) / 2; snippets above ``fg_threshold`` are foreground (their
    confidence: max TCAM over the video's classes), below ``bg_threshold`` background (max over all).
    """
    terms = []
    for i in range(tcam.shape[0]):
        t = int(seq_len[i])
        if t == 0 or not bool(labels[i].any()):
            continue
        x = emb[i, :t]
        lam = (1 - F.cosine_similarity(x, bg_mean.detach().expand_as(x), dim=1)) / 2
        fgid, bgid = lam > fg_threshold, lam < bg_threshold
        if not (bool(fgid.any()) and bool(bgid.any())):
            continue
        conf_fg = tcam[i, :t][:, labels[i] > 0].max(dim=1).values
        conf_all = tcam[i, :t].max(dim=1).values
        conf = torch.cat([conf_fg[fgid], conf_all[bgid]])
        y = torch.cat([torch.zeros(int(fgid.sum()), dtype=torch.long, device=conf.device),
                       torch.ones(int(bgid.sum()), dtype=torch.long, device=conf.device)])
        if kind == "pdmi":
            terms.append(pdmi(torch.stack([conf, 1 - conf], 1), y, 2))
        else:
            terms.append(_pointwise_denoise(kind, 1 - conf, y.to(conf.dtype)))
    return torch.stack(terms).mean() if terms else tcam.sum() * 0


def video_denoise_loss(p: torch.Tensor, labels: torch.Tensor, kind: str = "pdmi") -> torch.Tensor:
    """L_DV: video scores masked at 0.2 x the video's best, renormalised, against the batch's labels."""
    y = labels.to(p.dtype)
    keep = p > 0.2 * p.max(dim=1, keepdim=True).values
    r = p * keep
    r = r / r.sum(1, keepdim=True)
    if kind != "pdmi":
        return _pointwise_denoise(kind, r, y / y.sum(1, keepdim=True).clamp(min=1))
    Y = y.T / y.T.sum(1, keepdim=True).clamp(min=1)  # (C, B): per class, the mean over videos with it
    s = torch.linalg.svdvals(Y @ r)
    s = s[s > 1e-5]  # classes absent from the batch give zero singular values
    if len(s) == 0:
        return p.sum() * 0
    return _finite_or_zero(torch.log(s.max() / s.min()))


def update_running_bg(bg_mean: torch.Tensor, bg_top: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """bg_mean <- 0.9 bg_mean + 0.1 mean(most-background embeddings), without gradient."""
    if len(bg_top) == 0:
        return bg_mean
    return momentum * bg_mean + (1 - momentum) * bg_top.detach().mean(0, keepdim=True)


# ------------------------------------------------------------- the total


# Ablations of the paper's Tables 3 and 4: which terms a variant uses.
VARIANTS = {
    "ce": dict(focal=False, embed=False, denoise=None),  # cross-entropy only
    "focal": dict(focal=True, embed=False, denoise=None),  # focal only
    "dis": dict(focal=True, embed=True, denoise=None),  # L_Dis only
    "dis_pdmi": dict(focal=True, embed=True, denoise="pdmi"),  # L_Dis + L_D (pDMI): D2-Net
    "dis_l1": dict(focal=True, embed=True, denoise="l1"),  # L_Dis + L1 denoising
    "dis_bce": dict(focal=True, embed=True, denoise="bce"),  # L_Dis + BCE denoising
}


def d2net_loss(out, seq_len: torch.Tensor, labels: torch.Tensor, running_bg: torch.Tensor, cfg, iteration: int,
               generator: torch.Generator | None = None):
    """The training loss of one batch: (total, {term: value}, new running background).

    ``cfg`` carries variant, alpha, compactness_weight, focal_exponent, topk_divisor, bg_threshold,
    pdmi_bg_threshold, pdmi_start_iter, reference_pairing_rows. Videos shorter than 5 snippets or
    without a label are left out, as in the reference. The denoising terms run after
    ``pdmi_start_iter`` on even iterations (the reference's schedule).
    """
    v = VARIANTS[cfg.variant]
    keep = (seq_len >= 5) & labels.bool().any(1)
    tcam, emb, seq, lab = out.tcam[keep], out.embedding[keep], seq_len[keep], labels[keep]
    zero = out.tcam.sum() * 0
    if len(seq) == 0:
        return zero, {"cls": 0.0, "ds": 0.0, "dv": 0.0}, running_bg
    p = video_scores(tcam, seq, cfg.topk_divisor)
    fg, bg, bg_top = attention(tcam, seq, cfg.bg_threshold)
    x_bg, has_bg = weighted_embeddings(emb, bg)
    new_bg = update_running_bg(running_bg, emb[torch.arange(len(seq), device=emb.device), bg_top][has_bg])
    wt = None
    if v["embed"]:
        x_fg, has_fg = weighted_embeddings(emb, fg)
        wt = pair_terms(x_fg, has_fg, x_bg, has_bg, generator, cfg.reference_pairing_rows)
    cls = classification_loss(p, lab, wt, cfg.compactness_weight, cfg.focal_exponent if v["focal"] else 0.0)
    ds = dv = zero
    if v["denoise"] and iteration > cfg.pdmi_start_iter and iteration % 2 == 0:
        ds = snippet_denoise_loss(tcam, emb, seq, lab, new_bg, 0.5, cfg.pdmi_bg_threshold, v["denoise"])
        dv = video_denoise_loss(p, lab, v["denoise"])
    total = cls + cfg.alpha * (ds + dv)
    return total, {"cls": cls.item(), "ds": ds.item(), "dv": dv.item()}, new_bg
