"""Evaluation against exact search: recall@K, hit-rate@K of future interactions, tuning.

recall@K = mean over queries of |approx top-K ∩ exact top-K| / K (exact top-K from a
brute-force ``IndexFlatIP`` over the same vectors; ties at the K-th score can make a
correct result count as a miss, which only errs on the safe side).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import faiss
import numpy as np

from retrieval import faiss_index


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, use_gpu: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k: (nq, d) x (n, d) -> scores, rows (nq, k)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    flat = faiss_index.maybe_gpu(flat, use_gpu)
    return flat.search(queries, min(k, vectors.shape[0]))


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """found, truth: (nq, >=k) row numbers; -1 (no result) never matches."""
    k = min(k, truth.shape[1])
    hits = 0
    for f, t in zip(found[:, :k], truth[:, :k]):
        hits += len(set(f[f >= 0].tolist()) & set(t.tolist()))
    return hits / (k * truth.shape[0])


def recalls(found: np.ndarray, truth: np.ndarray, k_values: Sequence[int]) -> dict[str, float]:
    return {str(k): round(recall_at_k(found, truth, k), 6) for k in k_values}


def hit_rate_at_k(
    found_ids: np.ndarray, future_items: Sequence[Iterable[str]], k_values: Sequence[int]
) -> dict[str, float]:
    """Share of users with at least one later-interacted item in their top-K.

    found_ids: (n_users, >=max K) item ids as returned by :func:`retrieval.search`;
    future_items[i]: the items user i interacted with after the index's ``ds``.
    Users without any future item are skipped (they cannot hit).
    """
    if len(found_ids) != len(future_items):
        raise ValueError(f"{len(found_ids)} result rows but {len(future_items)} future-item lists")
    out: dict[str, float] = {}
    for k in k_values:
        hits = users = 0
        for row, fut in zip(found_ids, future_items):
            fut = set(fut)
            if not fut:
                continue
            users += 1
            hits += bool(fut.intersection(row[:k].tolist()))
        out[str(k)] = round(hits / users, 6) if users else float("nan")
    return out


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    """Rows (nq, k) and the best wall time of ``repeats`` runs, in seconds."""
    best = float("inf")
    rows = None
    for _ in range(repeats):
        t = time.perf_counter()
        _, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - t)
    return rows, best


def tune(
    index: faiss.Index,
    queries: np.ndarray,
    truth: np.ndarray,
    k_values: Sequence[int],
    target: float,
    timing_rounds: int = 5,
) -> tuple[dict[str, int], list[dict]]:
    """Fastest search parameters whose min recall over ``k_values`` reaches ``target``.

    1. Recall sweep: for each ``k_factor`` (or the single setting), raise ``nprobe`` /
       ``efSearch`` until the target is met (more only costs time): one candidate each.
    2. Timing: the candidates (dominated ones dropped) are timed in ``timing_rounds``
       interleaved rounds and the best time of each kept, so a burst of load from other
       processes does not decide the choice.
    Returns (chosen params, every point tried as {params, recall, qps}); when no point
    reaches the target the most accurate one is returned (the caller refuses it).
    """
    grid = faiss_index.tunable(index)
    kmax = max(k_values)
    inner_name = next((n for n in ("nprobe", "efSearch") if n in grid), None)
    inner = grid.get(inner_name, [None]) if inner_name else [None]
    if inner_name == "efSearch":  # HNSW needs efSearch >= k
        inner = sorted({max(v, kmax) for v in inner})
    points: list[dict] = []
    candidates: list[dict] = []
    for kf in grid.get("k_factor", [None]):
        for v in inner:
            params = {name: val for name, val in (("k_factor", kf), (inner_name, v)) if val is not None}
            faiss_index.set_params(index, params)
            rows, secs = timed_search(index, queries, kmax)
            rec = min(recalls(rows, truth, k_values).values())
            points.append({"params": params, "recall": rec, "qps": len(queries) / secs})
            if rec >= target:
                candidates.append(points[-1])
                break
    if not candidates:
        best = max(points, key=lambda p: (p["recall"], p["qps"]))
        faiss_index.set_params(index, best["params"])
        return dict(best["params"]), points
    if inner_name is not None:  # same or more probes with a larger k_factor is dominated
        candidates = [
            c
            for i, c in enumerate(candidates)
            if not any(d["params"][inner_name] <= c["params"][inner_name] for d in candidates[:i])
        ]
    best_s = [float("inf")] * len(candidates)
    for _ in range(timing_rounds if len(candidates) > 1 else 1):
        for i, c in enumerate(candidates):
            faiss_index.set_params(index, c["params"])
            best_s[i] = min(best_s[i], timed_search(index, queries, kmax)[1])
    for c, s in zip(candidates, best_s):
        c["qps"] = len(queries) / s
    best = max(candidates, key=lambda c: c["qps"])
    faiss_index.set_params(index, best["params"])
    return dict(best["params"]), points
