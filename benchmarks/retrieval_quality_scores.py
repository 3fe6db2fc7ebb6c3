"""Scoring the rankers (recall/NDCG@K over users with targets), the tower-minus-peer paired
differences, and the Markdown tables the benchmark prints."""

from __future__ import annotations

import numpy as np

from benchmarks.retrieval_quality_phase import Phase

KS = (10, 50, 100)
METHODS = (
    "query_tower",
    "raw_ur",
    "popularity",
    "popularity_recent",
    "popularity_scenario",
    "als",
    "two_tower",
    "oracle",
)


def score_all(ph: Phase, tgt: list[set[int]], rankers: dict, cand: np.ndarray | None, scen: int | None) -> dict:
    """{method: recall/ndcg dict} over users with targets."""
    from retrieval.quality import recall_ndcg

    rows = np.array([u for u, t in enumerate(tgt) if t])
    if len(rows) == 0:
        return {}
    k = max(KS)
    out = {}
    for name, fn in rankers.items():
        ranked = fn(rows, k, cand, scen)
        if ranked is None:
            continue
        out[name] = recall_ndcg(ranked, [tgt[u] for u in rows], KS)
        out[name]["per_user_recall@50"] = [
            len(set(r[:50].tolist()) & tgt[u]) / len(tgt[u]) for r, u in zip(ranked, rows)
        ]
    return out


def paired_differences(per_user: dict[str, list[np.ndarray]]) -> dict:
    """Query tower minus each peer, test-period recall@50: the mean per-user difference (each
    user's recall averaged over seeds first) and its standard error over users: how much of
    a gap one held-out period's users can resolve."""
    if "query_tower" not in per_user:
        return {}
    tower = np.mean(per_user["query_tower"], axis=0)
    out = {}
    for m, v in per_user.items():
        if m == "query_tower":
            continue
        d = tower - np.mean(v, axis=0)
        out[m] = {"diff": round(float(d.mean()), 4), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)}
    return out


def print_tables(results: dict) -> None:
    for name, r in results.items():
        users = {m: r.get(f"{m}.users", {}).get("mean") for m in METHODS}
        print(f"\n{name} ({int(max(v for v in users.values() if v is not None))} users)")
        print(
            "| method | " + " | ".join(f"recall@{k}" for k in KS) + " | " + " | ".join(f"NDCG@{k}" for k in KS) + " |"
        )
        print("|---|" + "---|" * (2 * len(KS)))
        for m in METHODS:
            if f"{m}.recall@10" not in r:
                continue
            cells = [
                f"{r[f'{m}.{x}@{k}']['mean']:.4f} ± {r[f'{m}.{x}@{k}']['std']:.4f}"
                for x in ("recall", "ndcg")
                for k in KS
            ]
            print(f"| {m} | " + " | ".join(cells) + " |")
