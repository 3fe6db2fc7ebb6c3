"""Rankers: users -> ranked catalogue rows (U, K), minus the items each user already saw; by
inner product of fitted vectors, or by (global, per-scenario, time-decayed) popularity."""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmarks.retrieval_quality_phase import Phase


def ranked_by_vectors(q: np.ndarray, items: np.ndarray, ph: Phase, rows: np.ndarray, cand: np.ndarray | None, k: int):
    from retrieval.quality import search_topk

    excl = [ph.seen[u] for u in rows]
    if cand is None:
        return search_topk(q[rows], items, k, excl)
    cmap = {c: j for j, c in enumerate(cand)}
    found = search_topk(q[rows], items[cand], k, [[cmap[c] for c in e if c in cmap] for e in excl])
    return np.where(found >= 0, cand[np.clip(found, 0, None)], -1)


def popularity_rank(ph: Phase, rows: np.ndarray, k: int, scen_of_user: np.ndarray | None, cand: np.ndarray | None):
    from retrieval.quality import popularity_ranking, popularity_topk

    n = len(ph.items)
    if scen_of_user is None:
        order = popularity_ranking(Counter(ph.train_i.tolist()), n)
        if cand is not None:
            keep = set(cand.tolist())
            order = np.array([r for r in order if r in keep])
        return popularity_topk(order, k, [ph.seen[u] for u in rows])
    out = np.full((len(rows), k), -1, dtype=np.int64)
    glob = Counter(ph.train_i.tolist())
    orders = {}
    for s in set(scen_of_user.tolist()):
        c = Counter(ph.train_i[ph.train_scen == s].tolist())
        # within-scenario count first, global count breaks ties (and ranks the rest)
        score = {i: c.get(i, 0) * 1e6 + glob.get(i, 0) for i in range(n)}
        o = popularity_ranking(score, n)
        if cand is not None:
            keep = set(cand.tolist())
            o = np.array([r for r in o if r in keep])
        orders[s] = o
    for j, (u, s) in enumerate(zip(rows, scen_of_user)):
        row = popularity_topk(orders[int(s)], k, [ph.seen[u]])[0]
        out[j, : len(row)] = row
    return out


def recent_popularity_rank(ph: Phase, rows: np.ndarray, k: int, half_life_days: float, cand=None):
    """Time-decayed popularity at the cutoff (retrieval.query_features.recent_popularity), minus seen items."""
    from retrieval.quality import popularity_topk
    from retrieval.query_features import recent_popularity

    col = recent_popularity(ph.train_i, ph.train_t, len(ph.items), half_life_days * 86400.0, ph.cutoff)[:, 0]
    order = np.lexsort((np.arange(len(col)), -col))
    if cand is not None:
        keep = set(cand.tolist())
        order = np.array([r for r in order if r in keep])
    return popularity_topk(order, k, [ph.seen[u] for u in rows])


def rankers_for(ph: Phase, fitted: dict, recent_hl: float | None = None) -> dict:
    def vec(q, items):
        return lambda rows, k, cand, scen: ranked_by_vectors(q, items, ph, rows, cand, k)

    r = {
        "popularity": lambda rows, k, cand, scen: popularity_rank(ph, rows, k, None, cand),
        "popularity_scenario": lambda rows, k, cand, scen: popularity_rank(
            ph, rows, k, ph.user_top_scen[rows] if scen is None else np.full(len(rows), scen), cand
        ),
    }
    if recent_hl is not None:
        r["popularity_recent"] = lambda rows, k, cand, scen: recent_popularity_rank(ph, rows, k, recent_hl, cand)
    for name, (q, items) in fitted.items():
        r[name] = vec(q, items)
    return r
