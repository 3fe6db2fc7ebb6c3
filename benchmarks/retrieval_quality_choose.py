"""The validation phase of the benchmark: every choice is made here. The query tower's options
greedily, one group at a time, each kept only if validation recall@50 improves; then the
two-tower's epochs, the recent-popularity half-life and ALS's size."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.retrieval_quality_fit import TOWER_DEFAULTS, fit_als, fit_tower, fit_two_tower, tower_inputs, tower_name
from benchmarks.retrieval_quality_log import Log
from benchmarks.retrieval_quality_phase import make_phase, targets
from benchmarks.retrieval_quality_rank import popularity_rank, ranked_by_vectors, recent_popularity_rank


def choose_on_validation(lg: Log, split: dict[str, list[str]], tau: float, raw_ok: bool, args) -> dict:
    """Fit every method on the train days and score it on the validation days; returns the
    choices (``query_tower`` settings and epochs, ``two_tower_epochs``,
    ``popularity_recent_half_life_days``, ``als``) with every validation recall@50 tried
    (``valid_recall_at_50``). Sets ``args.temperature`` to the tower's chosen temperature
    (the two-tower of the test phase gets the same loss settings)."""
    # validation phase: every choice
    val = make_phase(lg, split["train"], tau)
    vt = targets(lg, val, split["valid"])
    vrows = np.array([u for u, t in enumerate(vt) if t])

    def v_recall(q, items) -> float:
        from retrieval.quality import recall_ndcg

        return recall_ndcg(ranked_by_vectors(q, items, val, vrows, None, 50), [vt[u] for u in vrows], (50,))["recall"][
            "50"
        ]

    choices: dict = {"valid_recall_at_50": {}}
    vr = choices["valid_recall_at_50"]

    def try_tower(tc: dict) -> tuple[float, int]:
        fit, _, _ = fit_tower(
            val,
            tc,
            0,
            args,
            evaluate=lambda tw, items: v_recall(tw.encode(tower_inputs(val.state, tc["inputs"])), items),
        )
        v = max(h["valid"] for h in fit.history)
        vr[f"query_tower[{tower_name(tc)}]"] = round(v, 4)
        print(f"  valid {tower_name(tc)}: {v:.4f} (epoch {fit.epochs})", flush=True)
        return v, fit.epochs

    # greedy, one option at a time, each kept only if validation recall@50 improves
    tc = dict(TOWER_DEFAULTS)
    best_v, tower_epochs = try_tower(tc)
    grid = [
        ("inputs", [i for i in args.tower_inputs if i != tc["inputs"]]),
        ("T", [t for t in args.temperatures if t != tc["T"]]),
        ("pop", [dict(pop="none"), dict(pop="all", beta=1.0)]
         + [dict(pop="recent", hl=h, beta=b) for h in args.half_lives for b in (None, *args.prior_weights)]),
        ("logq", [0.5, 0.0]),
        ("item", ["bias", "linear", "mlp"]),
        ("rand", [256]),
    ]  # fmt: skip
    for _, values in grid:
        base = dict(tc)
        for value in values:
            cand = {**base, **value} if isinstance(value, dict) else {**base, _: value}
            v, e = try_tower(cand)
            if v > best_v:
                best_v, tower_epochs, tc = v, e, cand
    best_t = tc["T"]
    args.temperature = best_t  # the two-tower gets the same loss settings
    scores: list[float] = []
    _, _, tt_epochs = fit_two_tower(val, 0, args, evaluate=lambda uq, it: scores.append(v_recall(uq, it)) or scores[-1])
    vr["two_tower"] = round(max(scores), 4)
    from retrieval.quality import recall_ndcg

    vr["popularity"] = round(
        recall_ndcg(popularity_rank(val, vrows, 50, None, None), [vt[u] for u in vrows], (50,))["recall"]["50"], 4
    )
    recent_hl, recent_v = None, -1.0
    for hl in args.half_lives:
        v = recall_ndcg(recent_popularity_rank(val, vrows, 50, hl), [vt[u] for u in vrows], (50,))["recall"]["50"]
        vr[f"popularity_recent[hl={hl}d]"] = round(v, 4)
        if v > recent_v:
            recent_hl, recent_v = hl, v
    als_best, als_v = None, -1.0
    for factors in (32, 64):
        for reg in (0.01, 0.1):
            uf, itf = fit_als(val, factors, reg, 10.0, 0, args.threads)
            v = v_recall(uf, itf)
            vr[f"als[f={factors},reg={reg}]"] = round(v, 4)
            if v > als_v:
                als_best, als_v = (factors, reg), v
    if raw_ok:
        vr["raw_ur"] = round(v_recall(val.state["ur"], val.ir), 4)
    choices.update(
        query_tower=tc,
        query_tower_epochs=tower_epochs,
        popularity_recent_half_life_days=recent_hl,
        two_tower_epochs=tt_epochs,
        als=dict(factors=als_best[0], regularization=als_best[1], alpha=10.0),
    )
    print("validation choices:", json.dumps(choices), flush=True)
    return choices
