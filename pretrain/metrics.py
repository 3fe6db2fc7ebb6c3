"""Evaluation metrics (numpy): AUC, GAUC, logloss, effective rank. Later stages import these."""

from __future__ import annotations

import numpy as np
import torch


def auc(labels, scores) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; tied scores get average ranks.

    Returns NaN when only one class is present.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels, scores, groups) -> float:
    """Group AUC: per-group AUC weighted by group size, over groups with both classes
    (the usual per-user GAUC). NaN if no group has both classes."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not (y.shape == s.shape == g.shape):
        raise ValueError(f"labels {y.shape}, scores {s.shape}, groups {g.shape} differ in shape")
    _, inv = np.unique(g, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    total, weight = 0.0, 0
    for idx in np.split(order, bounds):
        yy = y[idx]
        n_pos = int((yy == 1).sum())
        if n_pos == 0 or n_pos == len(idx):
            continue
        total += auc(yy, s[idx]) * len(idx)
        weight += len(idx)
    return total / weight if weight else float("nan")


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1-eps])."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in shape")
    if y.size == 0:
        return float("nan")
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def effective_rank(x) -> float:
    """Effective rank (papers.md section 2): ``exp(-sum p_i ln p_i)``, ``p_i = s_i / sum(s)``.

    ``x`` [N, D]: of that matrix. ``x`` [N, T, D]: of each sample's T x D matrix, averaged
    over samples (all-zero samples are skipped). Accepts numpy arrays or torch tensors.
    """
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        return _erank(np.linalg.svd(a, compute_uv=False))
    if a.ndim == 3:
        s = np.linalg.svd(a, compute_uv=False)  # [N, min(T, D)]
        vals = [_erank(row) for row in s if row.sum() > 0]
        return float(np.mean(vals)) if vals else float("nan")
    raise ValueError(f"effective_rank expects [N, D] or [N, T, D], got shape {a.shape}")


def _erank(s: np.ndarray) -> float:
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    new_group = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(s)]
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(s))
    ranks[order] = mean_rank[group]
    return ranks
