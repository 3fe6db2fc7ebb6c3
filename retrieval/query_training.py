"""Training the query tower: :func:`train_query_tower` fits a :class:`QueryTower` on positive
(user input, item) pairs with the sampled softmax (retrieval/sampled_softmax.py), picking
the epoch on a validation score when one is given."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.query_tower import QueryTower
from retrieval.sampled_softmax import sampled_softmax_loss

log = logging.getLogger(__name__)


@dataclass
class TowerFit:
    """What :func:`train_query_tower` returns: the tower (weights of the chosen epoch), that
    epoch (1-based) and one record per epoch run (``epoch``, ``loss``, ``valid`` when evaluated)."""

    tower: QueryTower
    epochs: int
    history: list[dict]


def train_query_tower(
    x: np.ndarray,
    item_rows: np.ndarray,
    item_vecs: np.ndarray,
    *,
    hidden: int = 64,
    epochs: int = 10,
    batch_size: int = 512,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    temperature: float = 0.1,
    random_negatives: int = 0,
    logq: bool | float = True,
    item_adapter: str = "none",
    item_bias: bool = False,
    bias_decay: float = 0.0,
    pass_through: int = 0,
    pair_columns: np.ndarray | None = None,
    prior_weight: float | None = None,
    seed: int = 0,
    evaluate: Callable[[QueryTower], float] | None = None,
    patience: int = 2,
) -> TowerFit:
    """Fit a :class:`QueryTower` on positive pairs (x [P, d_in], item_rows [P] into
    item_vecs [N, d_item], frozen). ``evaluate(tower) -> score`` (higher is better, e.g.
    validation recall@50) picks the best epoch and stops after ``patience`` epochs
    without improvement; without it all ``epochs`` run.

    ``logq``: True/False, or a weight in [0, 1] on the correction (``logit - w log Q``).
    ``item_adapter`` / ``item_bias``: the item side of :class:`QueryTower` (``item_rows``
    index the bias); ``bias_decay``: L2 on the biases (added to the loss, per batch
    ``bias_decay * mean(b_batch^2)``); ``pass_through``: trailing columns of ``item_vecs``
    the item adapter leaves alone (the popularity column); ``pair_columns`` [P, c]: per
    positive, the values of the last ``c`` item columns as of that pair (a point-in-time
    popularity column, :func:`recent_popularity`); a batch's items (its in-batch negatives)
    then carry their own pair's values, random negatives the catalogue's."""
    if len(x) != len(item_rows) or len(x) == 0:
        raise ValueError(f"query tower: {len(x)} inputs for {len(item_rows)} positive items")
    if pair_columns is not None:
        pair_columns = np.asarray(pair_columns, dtype=np.float32).reshape(len(x), -1)
        if pair_columns.shape[1] > item_vecs.shape[1]:
            raise ValueError("pair_columns has more columns than the item vectors")
    w = float(logq)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"logq weight must be in [0, 1], got {logq}")
    # one thread: the tower is tiny, and OpenMP workers spinning on a busy machine cost
    # far more than they save (measured: minutes instead of seconds at load average 25)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        n_items = len(item_vecs)
        tower = QueryTower(
            x.shape[1],
            item_vecs.shape[1],
            hidden,
            item_adapter=item_adapter,
            pass_through=pass_through,
            num_items=n_items,
            item_bias=item_bias,
            prior_weight=prior_weight,
        )
        tower.set_standardisation(x)
        return _fit(
            tower, g, x, item_rows, item_vecs, pair_columns, epochs, batch_size, lr, weight_decay, temperature,
            random_negatives, w, bias_decay, evaluate, patience,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _fit(
    tower,
    g,
    x,
    item_rows,
    item_vecs,
    pair_columns,
    epochs,
    batch_size,
    lr,
    weight_decay,
    temperature,
    random_negatives,
    logq_w,
    bias_decay,
    evaluate,
    patience,
) -> TowerFit:
    xs = torch.as_tensor(x, dtype=torch.float32)
    rows = torch.as_tensor(item_rows, dtype=torch.long)
    vecs = torch.tensor(np.asarray(item_vecs), dtype=torch.float32)
    pcols = None if pair_columns is None else torch.as_tensor(pair_columns, dtype=torch.float32)
    n_items = len(item_vecs)
    counts = np.bincount(item_rows, minlength=n_items).astype(np.float64)
    log_p = torch.as_tensor(np.log(np.maximum(counts, 1) / len(item_rows)), dtype=torch.float32)
    bias_params = [tower.bias] if tower.bias is not None else []
    other = [p for p in tower.parameters() if all(p is not b for b in bias_params)]
    groups = [{"params": other, "weight_decay": weight_decay}]
    if bias_params:
        groups.append({"params": bias_params, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=lr)
    best, best_state, best_epoch, history, waited = -math.inf, None, 0, [], 0
    for epoch in range(1, epochs + 1):
        tower.train()
        order = torch.randperm(len(xs), generator=g)
        total = 0.0
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            if len(idx) < 2:
                continue
            b_items = rows[idx]
            b_vecs = vecs[b_items]
            if pcols is not None:
                b_vecs = torch.cat([b_vecs[:, : vecs.shape[1] - pcols.shape[1]], pcols[idx]], dim=1)
            rand = torch.randint(0, n_items, (random_negatives,), generator=g) if random_negatives else None
            loss = sampled_softmax_loss(
                tower(xs[idx]),
                b_items,
                tower.items(b_vecs, b_items),
                logq_w * log_p[b_items] if logq_w else None,
                temperature,
                rand,
                tower.items(vecs[rand], rand) if rand is not None else None,
                -logq_w * math.log(n_items) if rand is not None else None,
            )
            if bias_params and bias_decay:
                loss = loss + bias_decay * tower.bias[b_items].pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        rec = {"epoch": epoch, "loss": total / len(xs)}
        if evaluate is not None:
            rec["valid"] = float(evaluate(tower))
            if rec["valid"] > best:
                best, best_epoch, waited = rec["valid"], epoch, 0
                best_state = {k: v.clone() for k, v in tower.state_dict().items()}
            else:
                waited += 1
        history.append(rec)
        log.debug("query tower epoch %d: %s", epoch, rec)
        if evaluate is not None and waited >= patience:
            break
    if best_state is not None:
        tower.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    tower.eval()
    return TowerFit(tower, best_epoch, history)
