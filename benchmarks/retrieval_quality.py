"""Retrieval quality of the query tower against real peers, side by side in one run.

    python -m benchmarks.retrieval_quality [--data generated|movielens] [--seeds N]

Protocol (MovieLens-100K: ../shared/data/README.md; generated log: the last 3 days held out):

1. The foundation model is pretrained **once per run** with the project's own plain loop
   (``pretrain.train.fit_plain``, the same per-step code as Ray Train) on the train days,
   early-stopped on the validation days, at a small budget; it stays frozen.
2. **Validation phase** (every choice is made here): each method fits on the train days
   and is scored on the validation period's positives. The query tower's options are
   chosen greedily, one group at a time, each kept only if validation recall@50 improves:
   inputs (UR, CR(u), UR+CR(u), +hist = mean IR of the user's last 20 positives, hist
   alone), temperature, popularity column (none; all-time share with a learned or fixed
   weight; time-decayed share with half-life ``--half-lives`` and a learned or fixed
   ``--prior-weights`` weight), logQ weight (1, 0.5, 0), item side (learned bias, linear or
   MLP residual IR adapter), 256 random negatives; its epochs, the recent-popularity
   half-life and ALS's size are chosen there too.
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
training scenario, or inside the scenario being scored), recent popularity (time-decayed
counts at the cutoff, half-life chosen on validation), implicit ALS, a plain two-tower
(user-id and item-id embeddings) trained from scratch with the query tower's loss and
budget, raw UR vs IR (today's served behaviour), the query tower. Per scenario: the two
scenarios with the fewest training positives, candidates restricted to the items seen in
that scenario. On the generated log, ``oracle`` ranks by the generator's own click model
(static tastes): the ceiling of any method. Last stdout line: one JSON object (means and
stds over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS: its own threads, not BLAS's

import numpy as np  # noqa: E402

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
    train_t: np.ndarray  # their times (seconds, sorted)
    cutoff: float  # the end of the fit days (seconds)
    train_x: dict[str, np.ndarray]  # point-in-time inputs of those pairs
    train_scen: np.ndarray
    item_scen: dict[int, set[int]]  # scenario -> catalogue rows seen in it
    user_top_scen: np.ndarray


def make_phase(lg: Log, fit_days: list[str], tau: float) -> Phase:
    from extract.probe import point_in_time_states
    from retrieval.query_tower import history_means

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


def item_space(ph: Phase, tc: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(item vectors before the tower's item side, per-pair columns or None) for tower
    settings ``tc``: IR, plus the popularity column ``tc["pop"]``: "none", "all" (log share
    of the fit days' positives) or "recent" (time-decayed log share, half-life ``tc["hl"]``
    days, at the cutoff for the catalogue and just before each pair for training)."""
    from retrieval.query_tower import popularity_column, recent_popularity

    pop = tc.get("pop", "none")
    if pop == "none":
        return ph.ir, None
    if pop == "all":
        return np.hstack([ph.ir, popularity_column(np.bincount(ph.train_i, minlength=len(ph.items)))]), None
    hl = tc["hl"] * 86400.0
    col = recent_popularity(ph.train_i, ph.train_t, len(ph.items), hl, ph.cutoff)
    return np.hstack([ph.ir, col]), recent_popularity(ph.train_i, ph.train_t, len(ph.items), hl, ph.train_t)[:, None]


TOWER_DEFAULTS = dict(inputs="ur+cr", T=0.2, pop="all", hl=7.0, beta=None, logq=1.0, item="none", rand=0)


def tower_name(tc: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in tc.items() if TOWER_DEFAULTS.get(k, object()) != v or k == "inputs")


def fit_tower(ph: Phase, tc: dict, seed: int, args, evaluate=None, epochs=None):
    """Train the query tower with settings ``tc`` (TOWER_DEFAULTS keys); returns (fit,
    query vectors of ph.users, indexed item vectors)."""
    from retrieval.query_tower import train_query_tower

    tc = {**TOWER_DEFAULTS, **tc}
    items, pcols = item_space(ph, tc)
    pop = tc["pop"] != "none"
    fit = train_query_tower(
        tower_inputs(ph.train_x, tc["inputs"]),
        ph.train_i,
        items,
        hidden=args.hidden,
        epochs=epochs or args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        temperature=tc["T"],
        random_negatives=tc["rand"],
        logq=tc["logq"],
        item_adapter=tc["item"].replace("bias+", "") if tc["item"] != "bias" else "none",
        item_bias=tc["item"].startswith("bias"),
        pass_through=int(pop),
        pair_columns=pcols,
        prior_weight=tc["beta"] if pop else None,
        seed=seed,
        evaluate=None if evaluate is None else (lambda tw: evaluate(tw, tw.encode_items(items))),
        patience=2,
    )
    return fit, fit.tower.encode(tower_inputs(ph.state, tc["inputs"])), fit.tower.encode_items(items)


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


def generator_oracle(ph: Phase, args) -> tuple[np.ndarray, np.ndarray] | None:
    """The generated log's own click model as a ranker (an upper bound, not a method): per user
    and item, the expected positive rate ``sum_s w_s P_s(i) sigmoid(b_s + a_s <p_u, M_s q_i> +
    pop_i)`` with the static tastes ``p_u`` (the daily drift of the held-out days is unknowable).
    Returned as (log-score rows per user, identity items) so the common ranking code applies."""
    from datasources import GeneratorConfig
    from datasources.generator import _sigmoid, _World

    cfg = GeneratorConfig(
        days=args.days, rows_per_day=args.rows_per_day, num_users=args.users, num_items=args.items, seed=args.data_seed
    )
    w = _World(cfg)
    try:
        users = np.array([int(u[1:]) for u in ph.users])
        items = np.array([int(i[1:]) for i in ph.items])
    except ValueError:
        return None
    s = np.zeros((len(users), len(items)))
    for k in range(len(w.scen_ids)):
        mq = w.q[items] @ w.scen_M[k].T
        logit = w.scen_bias[k] + w.scen_scale[k] * (w.p[users] @ mq.T) + w.item_pop[items][None]
        s += w.scen_w[k] * w.scen_item_p[k, items][None] * _sigmoid(logit)
    return np.log(s).astype(np.float32), np.eye(len(items), dtype=np.float32)


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


def recent_popularity_rank(ph: Phase, rows: np.ndarray, k: int, half_life_days: float, cand=None):
    """Time-decayed popularity at the cutoff (query_tower.recent_popularity), minus seen items."""
    from retrieval.quality import popularity_topk
    from retrieval.query_tower import recent_popularity

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
    ap.add_argument(
        "--half-lives",
        type=float,
        nargs="*",
        default=[7.0, 14.0],
        help="half-lives (days) of the recent-popularity column / peer tried on validation",
    )
    ap.add_argument(
        "--prior-weights",
        type=float,
        nargs="*",
        default=[1.0, 2.0, 4.0],
        help="fixed weights of the recent-popularity column (popularity as a prior) tried on validation",
    )
    ap.add_argument(
        "--tower-inputs",
        nargs="*",
        default=["ur", "cr", "ur+cr+hist", "hist"],
        help="query-tower inputs tried on validation after ur+cr ('+'-joined: ur, cr, hist); the daily "
        "pipeline can express every set with ur or cr in it (hist = retrieval.query_tower.history)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--cache",
        default=None,
        help="pickle of the frozen model's per-row vectors: written after pretraining, read instead of "
        "pretraining when it exists (same data and --fm-epochs only; for reruns of the tower choices)",
    )
    ap.add_argument("--out", default=None, help="also write the full result JSON here")
    args = ap.parse_args()
    import torch

    from extract.config import AggregateConfig

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.cache and Path(args.cache).exists():  # the frozen model's outputs of an earlier run
        with open(args.cache, "rb") as f:
            cached = pickle.load(f)
        lg, split = cached["lg"], cached["split"]
        print(f"frozen-model vectors from {args.cache}", flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            spec, table, split = load(args, Path(tmp))
        model, enc, cr_layer = pretrain(spec, table, split, args)
        lg = as_log(table, spec, sample_vectors(model, enc, table, cr_layer))
        if args.cache:
            with open(args.cache, "wb") as f:
                pickle.dump({"lg": lg, "split": split}, f)
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

    # test phase: refit on train + valid with the chosen settings
    te = make_phase(lg, split["train"] + split["valid"], tau)
    pos_fit = Counter(te.train_scen.tolist())
    small = [s for s, _ in sorted(pos_fit.items(), key=lambda kv: kv[1])[:2]]
    evalsets = {"next_day": (split["test"][:1], None), "test": (split["test"], None)}
    evalsets.update({f"test_scenario_{s}": (split["test"], s) for s in small})
    tgts = {name: targets(lg, te, days, s) for name, (days, s) in evalsets.items()}
    runs: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    oracle = generator_oracle(te, args) if args.data == "generated" else None
    per_user: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        fitted = {}
        _, tq, ti = fit_tower(te, tc, seed, args, epochs=tower_epochs)
        fitted["query_tower"] = (tq, ti)
        if raw_ok:
            fitted["raw_ur"] = (te.state["ur"], te.ir)
        uq, it, _ = fit_two_tower(te, seed, args, epochs=tt_epochs)
        fitted["two_tower"] = (uq, it)
        fitted["als"] = fit_als(te, als_best[0], als_best[1], 10.0, seed, args.threads)
        if args.data == "generated" and oracle is not None:
            fitted["oracle"] = oracle
        rankers = rankers_for(te, fitted, recent_hl)
        for name, (days, s) in evalsets.items():
            cand = None if s is None else np.array(sorted(te.item_scen.get(s, set())))
            for method, m in score_all(te, tgts[name], rankers, cand, s).items():
                for metric in ("recall", "ndcg"):
                    for k in KS:
                        runs[name][f"{method}.{metric}@{k}"].append(m[metric][str(k)])
                runs[name][f"{method}.users"] = [m["users"]]
                if name == "test":
                    per_user[method].append(np.asarray(m["per_user_recall@50"]))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)

    results = {
        name: {key: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)} for key, v in r.items()}
        for name, r in runs.items()
    }
    _print_tables(results)
    main_set = results["test"]

    def pick(metric: str, stat: str) -> dict:
        keys = METHODS
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
        "tower_minus_peer_recall_at_50": paired_differences(per_user),
        "choices": choices,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "results": results}, indent=2))
    print(json.dumps(summary))


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
