"""The query tower's extra inputs: a popularity column on the item side and the behaviour sequence.

Options measured in ``benchmarks.retrieval_quality`` (docs/retrieval.md): a popularity
column on the item side (all-time share :func:`popularity_column`, or time-decayed:
:func:`recent_popularity`, point in time per training pair), with a learned per-user weight
or a fixed weight (popularity as a prior the tower adds to); the behaviour sequence in IR
space as input (:func:`history_means`); an item side published with the index (learned item
bias, residual IR adapter): :meth:`retrieval.query_tower.QueryTower.encode_items` is what
the index holds.
"""

from __future__ import annotations

import numpy as np


def popularity_column(counts: np.ndarray) -> np.ndarray:
    """(n, 1) float32: log share of positives ``log((c_i + 1) / (sum c + n))`` per item.

    Appended to IR it gives the index an item-bias coordinate: ``<[q, w], [IR_i, log p_i]>
    = <q, IR_i> + w log p_i``, so the tower can express popularity, which a frozen IR space
    need not encode linearly (an inner product over IR alone has no item bias). Shares, not
    counts, so the column keeps its scale as the log grows."""
    c = np.asarray(counts, dtype=np.float64)
    return np.log((c + 1.0) / (c.sum() + len(c)))[:, None].astype(np.float32)


def history_means(
    users: np.ndarray, item_rows: np.ndarray, item_vecs: np.ndarray, last: int = 20
) -> tuple[np.ndarray, dict]:
    """The behaviour sequence in the item space: per positive event (time-ordered ``users`` /
    ``item_rows``), the mean of ``item_vecs`` over the user's previous ``last`` positives
    (strictly before the event: point in time; zeros when there are none; ``last`` 0 = all),
    and per user the same mean after all events (the state to query with).

    Returns (before [P, d] float32, {user: after [d] float32})."""
    d = item_vecs.shape[1]
    before = np.zeros((len(users), d), np.float32)
    hist: dict = {}
    for k, (u, r) in enumerate(zip(users.tolist(), item_rows.tolist())):
        h = hist.setdefault(u, [])
        if h:
            before[k] = item_vecs[h].mean(0)
        h.append(r)
        if last and len(h) > last:
            del h[0]
    after = {u: item_vecs[h].mean(0).astype(np.float32) for u, h in hist.items()}
    return before, after


def recent_popularity(
    item_rows: np.ndarray, times: np.ndarray, num_items: int, half_life_s: float, at: np.ndarray | float
) -> np.ndarray:
    """Time-decayed popularity as a log share: for each query time ``t`` (an array, or one
    float for the whole catalogue), ``log((c_i(t) + eps) / (sum_j c_j(t) + eps n))`` with
    ``c_i(t) = sum_{k: item_k = i, t_k < t} 2^(-(t - t_k) / half_life_s)`` over the positives
    (``item_rows`` at ``times``, seconds) strictly before ``t``; ``eps`` = 1 / num_items
    keeps unseen items finite.

    ``at`` float -> (num_items, 1) float32: the popularity column of the catalogue at ``t``.
    ``at`` array (one per positive, same order as ``item_rows``, sorted by time) -> (P,)
    float32: the column value of each positive's own item just before it happened (point
    in time: what the column would have said when the pair was made)."""
    item_rows = np.asarray(item_rows, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    eps = 1.0 / num_items
    if np.isscalar(at):
        w = np.where(times < at, np.exp2(-(float(at) - times) / half_life_s), 0.0)
        c = np.bincount(item_rows, weights=w, minlength=num_items)
        return np.log((c + eps) / (c.sum() + eps * num_items))[:, None].astype(np.float32)
    at = np.asarray(at, dtype=np.float64)
    if np.any(np.diff(times) < 0) or np.any(at != times):
        raise ValueError("recent_popularity: per-positive values need at == times, sorted by time")
    val = np.zeros(num_items)  # decayed count per item as of last_t[i]
    last_t = np.zeros(num_items)
    total, total_t = 0.0, times[0] if len(times) else 0.0
    out = np.zeros(len(item_rows), np.float32)
    k = 0
    while k < len(times):  # events at the same time do not see each other
        j = k
        while j < len(times) and times[j] == times[k]:
            j += 1
        t = times[k]
        tot = total * np.exp2(-(t - total_t) / half_life_s)
        for m in range(k, j):
            i = item_rows[m]
            c = val[i] * np.exp2(-(t - last_t[i]) / half_life_s)
            out[m] = np.log((c + eps) / (tot + eps * num_items))
        for m in range(k, j):
            i = item_rows[m]
            val[i] = val[i] * np.exp2(-(t - last_t[i]) / half_life_s) + 1.0
            last_t[i] = t
        total, total_t = tot + (j - k), t
        k = j
    return out
