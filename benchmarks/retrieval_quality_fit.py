"""The methods the benchmark fits on a :class:`Phase`: the query tower (settings ``tc``, keys of
:data:`TOWER_DEFAULTS`), a plain two-tower from scratch, implicit ALS, and on the generated log
the generator's own click model (an oracle). Each returns query and item vectors."""

from __future__ import annotations

import numpy as np

from benchmarks.retrieval_quality_phase import Phase


def tower_inputs(src: dict[str, np.ndarray], inputs: str) -> np.ndarray:
    return np.concatenate([src[n] for n in inputs.split("+")], axis=1).astype(np.float32)


def item_space(ph: Phase, tc: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(item vectors before the tower's item side, per-pair columns or None) for tower
    settings ``tc``: IR, plus the popularity column ``tc["pop"]``: "none", "all" (log share
    of the fit days' positives) or "recent" (time-decayed log share, half-life ``tc["hl"]``
    days, at the cutoff for the catalogue and just before each pair for training)."""
    from retrieval.query_features import popularity_column, recent_popularity

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
    from retrieval.query_training import train_query_tower

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

    from retrieval.sampled_softmax import sampled_softmax_loss

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
