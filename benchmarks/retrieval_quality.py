"""Retrieval quality of the query tower against real peers, side by side in one run.

    python -m benchmarks.retrieval_quality [--data generated|movielens] [--seeds N]

Protocol (MovieLens-100K: ../shared/data/README.md; generated log: the last 3 days held out):

1. The foundation model is pretrained **once per run** with the project's own plain loop
   (``pretrain.train.fit_plain``, the same per-step code as Ray Train) on the train days,
   early-stopped on the validation days, at a small budget; it stays frozen.
2. **Validation phase** (every choice is made here): each method fits on the train days
   and is scored on the validation period's positives; the query tower's inputs (UR,
   CR(u), UR+CR(u)), its epochs and ALS's size are chosen by validation recall@50.
3. **Test phase**: each method refits on train + validation days with the chosen settings
   (the foundation model is not retrained) and is scored on the next day's positives
   (the first test day) and on the whole test period's.

Evaluated users: seen in the fit days (a positive there) and with a held-out positive.
Candidates: items seen in the fit days; items the user already interacted with are
excluded from the ranking and from the targets (retrieval of new items). Positive = the
first task's label (MovieLens: rating >= 4). User state for the held-out period: the
user's latest sample before the cutoff (UR as the published ``user_ur``), CR(u) the
time-decayed sum at the cutoff (tau and l2 as ``extract.AggregateConfig``).

Methods: popularity (global; per scenario = counts inside the user's most frequent
training scenario, or inside the scenario being scored), implicit ALS, a plain two-tower
(user-id and item-id embeddings) trained from scratch with the query tower's loss and
budget, raw UR vs IR (today's served behaviour), the query tower. Per scenario: the two
scenarios with the fewest training positives, candidates restricted to the items seen in
that scenario. Last stdout line: one JSON object (means and stds over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS: its own threads, not BLAS's

import numpy as np  # noqa: E402

KS = (10, 50, 100)
METHODS = ("query_tower", "raw_ur", "popularity", "popularity_scenario", "als", "two_tower")
DEFAULT_ML = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k")


# --- data and the frozen foundation model ---------------------------------------------------
def load(args, work: Path):
    from datasources import (
        GeneratorConfig,
        MovieLensSource,
        generate_log,
        log_days,
        materialize,
        read_log,
        read_log_spec,
    )

    log = work / "log"
    if args.data == "generated":
        generate_log(
            GeneratorConfig(
                days=args.days,
                rows_per_day=args.rows_per_day,
                num_users=args.users,
                num_items=args.items,
                seed=args.data_seed,
            ),
            log,
        )
        days = log_days(log)
        split = {"train": days[:-3], "valid": days[-3:-2], "test": days[-2:]}
    else:
        materialize(MovieLensSource(kind="movielens", path=Path(args.movielens)), log)
        days = log_days(log)
        split = {
            "train": [d for d in days if d < "1998-02-01"],
            "valid": [d for d in days if "1998-02-01" <= d < "1998-03-01"],
            "test": [d for d in days if d >= "1998-03-01"],
        }
    spec = read_log_spec(log)
    table = read_log(log, split["train"] + split["valid"] + split["test"])
    return spec, table, split


def pretrain(spec, table, split, args):
    """Fit the foundation model once (plain loop); returns (model, encoder, cr layer)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pretrain import FeatureEncoder, FoundationModel, PretrainConfig
    from pretrain.data import to_arrays
    from pretrain.train import fit_plain

    tr = table.filter(pc.is_in(table["ds"], pa.array(split["train"])))
    va = table.filter(pc.is_in(table["ds"], pa.array(split["valid"])))
    enc = FeatureEncoder.fit(tr, spec)
    cfg = PretrainConfig.model_validate(
        {
            "train": {
                "epochs": args.fm_epochs,
                "seed": 0,
                "torch_threads": args.threads,
                "patience": 1,
                "diagnostics": False,
            }
        }
    )
    t0 = time.perf_counter()
    st = fit_plain(cfg.model, cfg.train, spec, enc.vocab_sizes, to_arrays(enc.encode(tr)), to_arrays(enc.encode(va)))
    model = FoundationModel(cfg.model, spec, enc.vocab_sizes)
    model.load_state_dict(st["best_state"])
    model.eval()
    print(
        f"foundation model: {tr.num_rows} train rows, {st['epoch']} epoch(s), {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return model, enc, model.default_cr_layer


def sample_vectors(model, enc, table, cr_layer: str) -> dict[str, np.ndarray]:
    """Per log row: UR [N, d_u], IR [N, d_i], CR(u,i) [N, d_c] of the frozen model."""
    import torch

    from pretrain.data import iter_batches, to_arrays

    arrays = to_arrays(enc.encode(table))
    out = defaultdict(list)
    with torch.no_grad():
        for b in iter_batches(arrays, 4096):
            r = model.representations(b, ["user_tower", "item_tower", cr_layer])
            out["ur"].append(r["user_tower"].numpy())
            out["ir"].append(r["item_tower"].numpy())
            out["cr"].append(r[cr_layer].numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


@dataclass
class Log:
    """The log as numpy columns, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    t: np.ndarray  # seconds
    ds: np.ndarray
    scenario: np.ndarray
    pos: np.ndarray  # bool
    vec: dict[str, np.ndarray]


def as_log(table, spec, vecs) -> Log:
    t = table["event_time"].cast("int64").to_numpy() / 1e6  # timestamp[us] -> seconds
    task = spec.tasks[0]
    lab = table[task].to_numpy(zero_copy_only=False)
    return Log(
        np.asarray(table["user_id"].to_pylist(), dtype=object),
        np.asarray(table["item_id"].to_pylist(), dtype=object),
        t.astype(np.float64),
        np.asarray(table["ds"].to_pylist(), dtype=object),
        table["scenario"].to_numpy(zero_copy_only=False).astype(np.int64),
        np.nan_to_num(lab) == 1.0,
        vecs,
    )


def l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


# --- one phase: fit days -> held-out sets ------------------------------------------------------
@dataclass
class Phase:
    items: np.ndarray  # catalogue item ids (rows)
    ir: np.ndarray  # [N, d_i] IR per catalogue item
    users: np.ndarray  # evaluated-capable users (seen: a positive in the fit days)
    state: dict[str, np.ndarray]  # user state at the cutoff: "ur", "cr" [U, d]
    seen: list[list[int]]  # per user: catalogue rows interacted with in the fit days
    train_u: np.ndarray  # positive pairs of the fit days: user row, item row
    train_i: np.ndarray
    train_x: dict[str, np.ndarray]  # point-in-time inputs of those pairs
    train_scen: np.ndarray
    item_scen: dict[int, set[int]]  # scenario -> catalogue rows seen in it
    user_top_scen: np.ndarray


def make_phase(lg: Log, fit_days: list[str], tau: float) -> Phase:
    from extract.probe import point_in_time_states

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
    return Phase(
        items=items,
        ir=ir,
        users=users,
        state={"ur": ur_state.astype(np.float32), "cr": l2(cr_state).astype(np.float32)},
        seen=[sorted(seen[u]) for u in range(len(users))],
        train_u=np.array([urow[u] for u in lg.user[rows]]),
        train_i=np.array([irow[i] for i in lg.item[rows]]),
        train_x={"ur": lg.vec["ur"][rows], "cr": l2(cr_before[pi]).astype(np.float32)},
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


# --- methods: each returns a scorer  users -> ranked catalogue rows (U, K) --------------------
def tower_inputs(src: dict[str, np.ndarray], inputs: str) -> np.ndarray:
    return np.concatenate([src[n] for n in inputs.split("+")], axis=1).astype(np.float32)


def ranked_by_vectors(q: np.ndarray, items: np.ndarray, ph: Phase, rows: np.ndarray, cand: np.ndarray | None, k: int):
    from retrieval.quality import search_topk

    excl = [ph.seen[u] for u in rows]
    if cand is None:
        return search_topk(q[rows], items, k, excl)
    cmap = {c: j for j, c in enumerate(cand)}
    found = search_topk(q[rows], items[cand], k, [[cmap[c] for c in e if c in cmap] for e in excl])
    return np.where(found >= 0, cand[np.clip(found, 0, None)], -1)


def item_space(ph: Phase, pop: bool) -> np.ndarray:
    """IR, or IR plus the popularity column (log share of the fit days' positives)."""
    from retrieval.query_tower import popularity_column

    if not pop:
        return ph.ir
    return np.hstack([ph.ir, popularity_column(np.bincount(ph.train_i, minlength=len(ph.items)))])


def fit_tower(
    ph: Phase, inputs: str, seed: int, args, evaluate=None, epochs=None, logq=True, temperature=None, pop=False
):
    from retrieval.query_tower import train_query_tower

    return train_query_tower(
        tower_inputs(ph.train_x, inputs),
        ph.train_i,
        item_space(ph, pop),
        hidden=args.hidden,
        epochs=epochs or args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        temperature=temperature or args.temperature,
        logq=logq,
        seed=seed,
        evaluate=evaluate,
        patience=2,
    )


def fit_two_tower(ph: Phase, seed: int, args, evaluate=None, epochs=None):
    """User-id and item-id embeddings (dim = IR dim), same loss, optimiser and budget."""
    import torch

    from retrieval.query_tower import sampled_softmax_loss

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = ph.ir.shape[1]
    ue, ie = torch.nn.Embedding(len(ph.users), d), torch.nn.Embedding(len(ph.items), d)
    for e in (ue, ie):
        torch.nn.init.normal_(e.weight, std=0.1)
    opt = torch.optim.Adam([*ue.parameters(), *ie.parameters()], lr=args.lr)
    uu, ii = torch.as_tensor(ph.train_u), torch.as_tensor(ph.train_i)
    log_p = torch.as_tensor(
        np.log(np.bincount(ph.train_i, minlength=len(ph.items)).clip(1) / len(ph.train_i)), dtype=torch.float32
    )
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    for epoch in range(1, (epochs or args.epochs) + 1):
        order = torch.randperm(len(uu), generator=g)
        for a in range(0, len(order), args.batch):
            idx = order[a : a + args.batch]
            if len(idx) < 2:
                continue
            loss = sampled_softmax_loss(ue(uu[idx]), ii[idx], ie(ii[idx]), log_p[ii[idx]], args.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if evaluate is not None:
            v = evaluate(ue.weight.detach().numpy(), ie.weight.detach().numpy())
            if v > best:
                best, best_epoch, waited = v, epoch, 0
                best_state = (ue.weight.detach().clone(), ie.weight.detach().clone())
            else:
                waited += 1
                if waited >= 2:
                    break
    if best_state is None:
        best_state, best_epoch = (ue.weight.detach(), ie.weight.detach()), epochs or args.epochs
    return best_state[0].numpy(), best_state[1].numpy(), best_epoch


def fit_als(ph: Phase, factors: int, reg: float, alpha: float, seed: int, threads: int):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    m = sp.csr_matrix(
        (np.full(len(ph.train_u), alpha, dtype=np.float32), (ph.train_u, ph.train_i)),
        shape=(len(ph.users), len(ph.items)),
    )
    m.sum_duplicates()
    als = AlternatingLeastSquares(
        factors=factors,
        regularization=reg,
        iterations=15,
        random_state=seed,
        num_threads=threads,
        calculate_training_loss=False,
    )
    als.fit(m, show_progress=False)
    return np.asarray(als.user_factors, dtype=np.float32), np.asarray(als.item_factors, dtype=np.float32)


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
    return out


def rankers_for(ph: Phase, fitted: dict) -> dict:
    def vec(q, items):
        return lambda rows, k, cand, scen: ranked_by_vectors(q, items, ph, rows, cand, k)

    r = {
        "popularity": lambda rows, k, cand, scen: popularity_rank(ph, rows, k, None, cand),
        "popularity_scenario": lambda rows, k, cand, scen: popularity_rank(
            ph, rows, k, ph.user_top_scen[rows] if scen is None else np.full(len(rows), scen), cand
        ),
    }
    for name, (q, items) in fitted.items():
        r[name] = vec(q, items)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description="retrieval quality: query tower vs peers")
    ap.add_argument("--data", choices=["generated", "movielens"], default="movielens")
    ap.add_argument("--movielens", default=DEFAULT_ML)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--rows-per-day", type=int, default=6000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--fm-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="max epochs of the query tower and the two-tower")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument(
        "--temperatures",
        type=float,
        nargs="*",
        default=[0.05, 0.1, 0.2],
        help="query-tower temperatures tried on validation (with the chosen inputs)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the full result JSON here")
    args = ap.parse_args()
    import torch

    from extract.config import AggregateConfig

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec, table, split = load(args, Path(tmp))
    model, enc, cr_layer = pretrain(spec, table, split, args)
    lg = as_log(table, spec, sample_vectors(model, enc, table, cr_layer))
    tau = AggregateConfig().tau_seconds
    raw_ok = lg.vec["ur"].shape[1] == lg.vec["ir"].shape[1]

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
    best_inputs, best_v, tower_epochs = None, -1.0, {}
    for inputs in ("ur", "cr", "ur+cr"):
        fit = fit_tower(
            val, inputs, 0, args, evaluate=lambda tw, i=inputs: v_recall(tw.encode(tower_inputs(val.state, i)), val.ir)
        )
        v = max(h["valid"] for h in fit.history)
        choices["valid_recall_at_50"][f"query_tower[{inputs}]"] = round(v, 4)
        tower_epochs[inputs] = fit.epochs
        if v > best_v:
            best_inputs, best_v = inputs, v
    best_t = args.temperature
    for temp in args.temperatures:
        if temp == args.temperature:
            continue
        fit = fit_tower(
            val,
            best_inputs,
            0,
            args,
            temperature=temp,
            evaluate=lambda tw: v_recall(tw.encode(tower_inputs(val.state, best_inputs)), val.ir),
        )
        v = max(h["valid"] for h in fit.history)
        choices["valid_recall_at_50"][f"query_tower[{best_inputs}, T={temp}]"] = round(v, 4)
        if v > best_v:
            best_t, best_v, tower_epochs[best_inputs] = temp, v, fit.epochs
    args.temperature = best_t  # the two-tower gets the same loss settings
    # the popularity column (an item-bias coordinate appended to IR, query_tower.popularity_column)
    pop_items = item_space(val, True)
    fit = fit_tower(
        val,
        best_inputs,
        0,
        args,
        temperature=best_t,
        pop=True,
        evaluate=lambda tw: v_recall(tw.encode(tower_inputs(val.state, best_inputs)), pop_items),
    )
    v = max(h["valid"] for h in fit.history)
    choices["valid_recall_at_50"][f"query_tower[{best_inputs}, T={best_t}, +pop column]"] = round(v, 4)
    use_pop = v > best_v
    if use_pop:
        best_v, tower_epochs[best_inputs] = v, fit.epochs
    fit = fit_tower(
        val,
        best_inputs,
        0,
        args,
        logq=False,
        pop=use_pop,
        evaluate=lambda tw: v_recall(tw.encode(tower_inputs(val.state, best_inputs)), item_space(val, use_pop)),
    )
    choices["valid_recall_at_50"][f"query_tower[{best_inputs}, no logQ]"] = round(
        max(h["valid"] for h in fit.history), 4
    )
    scores: list[float] = []
    _, _, tt_epochs = fit_two_tower(val, 0, args, evaluate=lambda uq, it: scores.append(v_recall(uq, it)) or scores[-1])
    choices["valid_recall_at_50"]["two_tower"] = round(max(scores), 4)
    from retrieval.quality import recall_ndcg

    choices["valid_recall_at_50"]["popularity"] = round(
        recall_ndcg(popularity_rank(val, vrows, 50, None, None), [vt[u] for u in vrows], (50,))["recall"]["50"], 4
    )
    als_best, als_v = None, -1.0
    for factors in (32, 64):
        for reg in (0.01, 0.1):
            uf, itf = fit_als(val, factors, reg, 10.0, 0, args.threads)
            v = v_recall(uf, itf)
            choices["valid_recall_at_50"][f"als[f={factors},reg={reg}]"] = round(v, 4)
            if v > als_v:
                als_best, als_v = (factors, reg), v
    if raw_ok:
        choices["valid_recall_at_50"]["raw_ur"] = round(v_recall(val.state["ur"], val.ir), 4)
    choices.update(
        query_tower_inputs=best_inputs,
        query_tower_temperature=best_t,
        query_tower_pop_column=use_pop,
        query_tower_epochs=tower_epochs[best_inputs],
        two_tower_epochs=tt_epochs,
        als=dict(factors=als_best[0], regularization=als_best[1], alpha=10.0),
    )
    print("validation choices:", json.dumps(choices), flush=True)

    # test phase: refit on train + valid with the chosen settings
    te = make_phase(lg, split["train"] + split["valid"], tau)
    pos_fit = Counter(te.train_scen.tolist())
    small = [s for s, _ in sorted(pos_fit.items(), key=lambda kv: kv[1])[:2]]
    evalsets = {"next_day": (split["test"][:1], None), "test": (split["test"], None)}
    evalsets.update({f"test_scenario_{s}": (split["test"], s) for s in small})
    tgts = {name: targets(lg, te, days, s) for name, (days, s) in evalsets.items()}
    runs: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        fitted = {}
        tw = fit_tower(
            te, best_inputs, seed, args, epochs=tower_epochs[best_inputs], temperature=best_t, pop=use_pop
        ).tower
        fitted["query_tower"] = (tw.encode(tower_inputs(te.state, best_inputs)), item_space(te, use_pop))
        if raw_ok:
            fitted["raw_ur"] = (te.state["ur"], te.ir)
        uq, it, _ = fit_two_tower(te, seed, args, epochs=tt_epochs)
        fitted["two_tower"] = (uq, it)
        fitted["als"] = fit_als(te, als_best[0], als_best[1], 10.0, seed, args.threads)
        rankers = rankers_for(te, fitted)
        for name, (days, s) in evalsets.items():
            cand = None if s is None else np.array(sorted(te.item_scen.get(s, set())))
            for method, m in score_all(te, tgts[name], rankers, cand, s).items():
                for metric in ("recall", "ndcg"):
                    for k in KS:
                        runs[name][f"{method}.{metric}@{k}"].append(m[metric][str(k)])
                runs[name][f"{method}.users"] = [m["users"]]
        print(f"seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)

    results = {
        name: {key: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)} for key, v in r.items()}
        for name, r in runs.items()
    }
    _print_tables(results)
    main_set = results["test"]

    def pick(metric: str, stat: str) -> dict:
        keys = ("query_tower", "raw_ur", "popularity", "popularity_scenario", "als", "two_tower")
        return {m: main_set.get(f"{m}.{metric}", {}).get(stat) for m in keys}

    summary = {
        "dataset": args.data,
        "seeds": args.seeds,
        "eval_set": "test",
        "recall_at_50": pick("recall@50", "mean"),
        "ndcg_at_50": pick("ndcg@50", "mean"),
        "recall_at_50_std": pick("recall@50", "std"),
        "ndcg_at_50_std": pick("ndcg@50", "std"),
        "next_day_recall_at_50": {m: results["next_day"].get(f"{m}.recall@50", {}).get("mean") for m in METHODS},
        "small_scenarios": small,
        "choices": choices,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=2))
    print(json.dumps(summary))


def _print_tables(results: dict) -> None:
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


if __name__ == "__main__":
    main()
