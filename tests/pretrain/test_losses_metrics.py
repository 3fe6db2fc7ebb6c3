"""Losses vs brute-force loops; metrics vs scikit-learn and numpy SVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from pretrain import auc, effective_rank, gauc, logloss
from pretrain.losses import masked_bce, multitask_loss, pairwise_loss


def test_pairwise_matches_double_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(30, generator=g)
    y = (torch.rand(30, generator=g) < 0.3).float()
    m = torch.rand(30, generator=g) < 0.8
    terms = [
        -math.log(1 / (1 + math.exp(-(z[i] - z[j]).item())))
        for i in range(30)
        for j in range(30)
        if m[i] and m[j] and y[i] == 1 and y[j] == 0
    ]
    assert pairwise_loss(z, y, m).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_masked_bce_ignores_masked_rows():
    z = torch.tensor([2.0, -1.0, 50.0])
    y = torch.tensor([1.0, 0.0, 0.0])
    m = torch.tensor([True, True, False])  # the huge wrong logit is masked out
    ref = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert masked_bce(z, y, m).item() == pytest.approx(ref, rel=1e-5)


def test_no_positive_batch_is_finite_and_differentiable():
    z = torch.randn(8, 2, requires_grad=True)
    y = torch.zeros(8, 2)
    m = torch.ones(8, 2, dtype=torch.bool)
    m[:, 1] = False  # task absent everywhere
    loss, parts = multitask_loss(z, y, m, ["click", "conversion"], pairwise_alpha={"click": 0.7, "conversion": 0.5})
    assert torch.isfinite(loss) and parts["conversion"] == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all() and (z.grad[:, 1] == 0).all()


def test_combined_pair_weights():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20, 1, generator=g)
    y = torch.tensor([1.0, 0.0] * 10).unsqueeze(1)
    m = torch.ones(20, 1, dtype=torch.bool)
    loss, _ = multitask_loss(z, y, m, ["t"], pairwise_alpha={"t": 0.8})
    ref = 0.8 * masked_bce(z[:, 0], y[:, 0], m[:, 0]) + 0.2 * pairwise_loss(z[:, 0], y[:, 0], m[:, 0])
    assert loss.item() == pytest.approx(ref.item())


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 7, 500).astype(float)  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert math.isnan(auc(np.ones(4), np.arange(4)))


def test_gauc_matches_brute_force():
    rng = np.random.default_rng(1)
    y, s, g = rng.integers(0, 2, 300), rng.random(300), rng.integers(0, 12, 300)
    num = den = 0.0
    for k in np.unique(g):
        sel = g == k
        if 0 < y[sel].sum() < sel.sum():
            num += roc_auc_score(y[sel], s[sel]) * sel.sum()
            den += sel.sum()
    assert gauc(y, s, g) == pytest.approx(num / den)


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 100), rng.uniform(0.01, 0.99, 100)
    assert logloss(y, p) == pytest.approx(log_loss(y, p))


def _np_erank(m):
    s = np.linalg.svd(m, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_vs_numpy_svd():
    rng = np.random.default_rng(3)
    x2 = rng.normal(size=(50, 8))
    assert effective_rank(x2) == pytest.approx(_np_erank(x2))
    x3 = rng.normal(size=(6, 5, 8))
    assert effective_rank(torch.tensor(x3)) == pytest.approx(np.mean([_np_erank(a) for a in x3]))
    low = rng.normal(size=(50, 1)) @ rng.normal(size=(1, 8))  # rank one
    assert effective_rank(low) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(np.eye(4)) == pytest.approx(4.0)
