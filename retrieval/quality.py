"""Retrieval quality against later positives: recall@K, NDCG@K, and the popularity baseline.

For one user with held-out positive items ``P`` (a set) and a ranked list ``R``:

    recall@K = |R[:K] ∩ P| / |P|
    NDCG@K   = sum_{r < K, R[r] in P} 1 / log2(r + 2)  /  sum_{r < min(|P|, K)} 1 / log2(r + 2)

(binary relevance; the ideal ranking puts all of ``P`` first). Both are averaged over the
users that have at least one held-out positive. Items the user already engaged with in
the fit days can be excluded from ``R`` (``seen``) and then also from ``P``: re-retrieving
a known item is a different problem (and on MovieLens a user rates a film once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import faiss
import numpy as np


def rank_scores(scores: np.ndarray, k: int, exclude: Sequence[Iterable[int]] | None = None) -> np.ndarray:
    """Top-``k`` column indices of ``scores`` [U, N] per row (descending), with the
    columns in ``exclude[u]`` pushed out of row u: (U, k) int64."""
    s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        for u, cols in enumerate(exclude):
            cols = list(cols)
            if cols:
                s[u, cols] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def search_topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    exclude: Sequence[Iterable[int]] | None = None,
    chunk: int = 2048,
) -> np.ndarray:
    """Exact inner-product top-``k`` item rows per query (queries [U, d], items [N, d]) with
    per-user exclusions; FAISS ``IndexFlatIP`` over-fetches by the longest exclusion list."""
    n = items.shape[0]
    extra = max((len(list(e)) for e in exclude), default=0) if exclude is not None else 0
    fetch = min(n, k + extra)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    out = np.full((queries.shape[0], min(k, n)), -1, dtype=np.int64)
    for a in range(0, queries.shape[0], chunk):
        _, rows = index.search(np.ascontiguousarray(queries[a : a + chunk], dtype=np.float32), fetch)
        for j, row in enumerate(rows):
            u = a + j
            ban = set(exclude[u]) if exclude is not None else ()
            kept = [r for r in row.tolist() if r >= 0 and r not in ban][: out.shape[1]]
            out[u, : len(kept)] = kept
    return out


def recall_ndcg(
    ranked: np.ndarray, positives: Sequence[Iterable[int]], k_values: Sequence[int]
) -> dict[str, dict[str, float]]:
    """``{"recall": {"10": .., ...}, "ndcg": {...}, "users": n}`` for ranked rows (U, >=K)
    and each user's held-out positive rows (users with none are skipped)."""
    discounts = 1.0 / np.log2(np.arange(max(k_values)) + 2.0)
    rec = {k: 0.0 for k in k_values}
    ndcg = {k: 0.0 for k in k_values}
    users = 0
    for row, pos in zip(ranked, positives):
        pos = set(pos)
        if not pos:
            continue
        users += 1
        hit = np.array([r in pos for r in row.tolist()], dtype=np.float64)
        for k in k_values:
            h = hit[:k]
            rec[k] += h.sum() / len(pos)
            ndcg[k] += (h * discounts[: len(h)]).sum() / discounts[: min(len(pos), k)].sum()
    if users == 0:
        return {"recall": {}, "ndcg": {}, "users": 0}
    return {
        "recall": {str(k): rec[k] / users for k in k_values},
        "ndcg": {str(k): ndcg[k] / users for k in k_values},
        "users": users,
    }


def popularity_ranking(counts: Mapping[int, int] | Counter, num_items: int) -> np.ndarray:
    """Item rows ordered by descending count (ties by row number): (num_items,)."""
    c = np.zeros(num_items, dtype=np.float64)
    for i, n in counts.items():
        c[i] = n
    return np.lexsort((np.arange(num_items), -c))


def popularity_topk(order: np.ndarray, k: int, exclude: Sequence[Iterable[int]]) -> np.ndarray:
    """The same popularity order for every user, minus that user's excluded rows: (U, k)."""
    out = np.full((len(exclude), min(k, len(order))), -1, dtype=np.int64)
    for u, ban in enumerate(exclude):
        ban = set(ban)
        kept = [r for r in order[: k + len(ban)].tolist() if r not in ban][: out.shape[1]]
        out[u, : len(kept)] = kept
    return out
