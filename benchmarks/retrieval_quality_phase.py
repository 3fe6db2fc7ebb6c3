"""One phase of the benchmark: fit days -> what every method fits on (:class:`Phase`: catalogue,
user state at the cutoff, point-in-time training pairs) and the held-out sets (:func:`targets`)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from benchmarks.retrieval_quality_log import Log, l2


@dataclass
class Phase:
    items: np.ndarray  # catalogue item ids (rows)
    ir: np.ndarray  # [N, d_i] IR per catalogue item
    users: np.ndarray  # evaluated-capable users (seen: a positive in the fit days)
    state: dict[str, np.ndarray]  # user state at the cutoff: "ur", "cr" [U, d]
    seen: list[list[int]]  # per user: catalogue rows interacted with in the fit days
    train_u: np.ndarray  # positive pairs of the fit days: user row, item row
    train_i: np.ndarray
    train_t: np.ndarray  # their times (seconds, sorted)
    cutoff: float  # the end of the fit days (seconds)
    train_x: dict[str, np.ndarray]  # point-in-time inputs of those pairs
    train_scen: np.ndarray
    item_scen: dict[int, set[int]]  # scenario -> catalogue rows seen in it
    user_top_scen: np.ndarray


def make_phase(lg: Log, fit_days: list[str], tau: float) -> Phase:
    from extract.probe import point_in_time_states
    from retrieval.query_features import history_means

    fit = np.isin(lg.ds, fit_days)
    cutoff = lg.t[fit].max() + 1.0
    items = np.unique(lg.item[fit])
    irow = {i: r for r, i in enumerate(items)}
    last_item = {}
    for k in np.flatnonzero(fit):
        last_item[lg.item[k]] = k
    ir = lg.vec["ir"][[last_item[i] for i in items]]
    fpos = fit & lg.pos
    users = np.unique(lg.user[fpos])
    urow = {u: r for r, u in enumerate(users)}
    # point-in-time CR(u) before every fit row, and at the cutoff
    idx = np.flatnonzero(fit)
    cr_before = point_in_time_states(lg.user[idx], lg.t[idx], lg.vec["cr"][idx].astype(np.float64), tau)
    last_row = {}
    for k in idx:
        last_row[lg.user[k]] = k
    ur_state = np.stack([lg.vec["ur"][last_row[u]] for u in users])
    cr_state = np.zeros((len(users), lg.vec["cr"].shape[1]))
    for j, k in enumerate(idx):
        u = lg.user[k]
        if u in urow:
            cr_state[urow[u]] += math.exp(-(cutoff - lg.t[k]) / tau) * lg.vec["cr"][k]
    seen = defaultdict(set)
    for k in idx:
        if lg.user[k] in urow:
            seen[urow[lg.user[k]]].add(irow[lg.item[k]])
    pi = np.flatnonzero(fpos[idx])
    rows = idx[pi]
    item_scen = defaultdict(set)
    for k in idx:
        item_scen[int(lg.scenario[k])].add(irow[lg.item[k]])
    top = np.zeros(len(users), dtype=np.int64)
    cnt = defaultdict(Counter)
    for k in rows:
        cnt[urow[lg.user[k]]][int(lg.scenario[k])] += 1
    for u, c in cnt.items():
        top[u] = c.most_common(1)[0][0]
    train_u = np.array([urow[u] for u in lg.user[rows]])
    train_i = np.array([irow[i] for i in lg.item[rows]])
    # the behaviour sequence in IR space: mean IR of the user's last 20 positives (point in time)
    hist_before, hist_after = history_means(train_u, train_i, ir, last=20)
    hist_state = np.stack([hist_after.get(u, np.zeros(ir.shape[1], np.float32)) for u in range(len(users))])
    return Phase(
        items=items,
        ir=ir,
        users=users,
        state={"ur": ur_state.astype(np.float32), "cr": l2(cr_state).astype(np.float32), "hist": hist_state},
        seen=[sorted(seen[u]) for u in range(len(users))],
        train_u=train_u,
        train_i=train_i,
        train_t=lg.t[rows],
        cutoff=float(cutoff),
        train_x={"ur": lg.vec["ur"][rows], "cr": l2(cr_before[pi]).astype(np.float32), "hist": hist_before},
        train_scen=lg.scenario[rows],
        item_scen=dict(item_scen),
        user_top_scen=top,
    )


def targets(lg: Log, ph: Phase, days: list[str], scenario: int | None = None) -> list[set[int]]:
    """Per phase user: held-out positive catalogue rows on ``days`` (minus already seen)."""
    urow = {u: r for r, u in enumerate(ph.users)}
    irow = {i: r for r, i in enumerate(ph.items)}
    out = [set() for _ in ph.users]
    m = np.isin(lg.ds, days) & lg.pos
    if scenario is not None:
        m &= lg.scenario == scenario
    for k in np.flatnonzero(m):
        u, i = urow.get(lg.user[k]), irow.get(lg.item[k])
        if u is not None and i is not None:
            out[u].add(i)
    return [t - set(s) for t, s in zip(out, ph.seen)]
