"""The query tower: a small adapter from the frozen LFM's user side into the IR space.

Model-level transfer (LFM4Ads "standalone retrieval"): the foundation model is frozen, its
published item vectors IR are the index, and only a small network ``A`` is trained so
that ``<A(x_u), IR(i)>`` is high for the items ``i`` user ``u`` engages with. ``x_u`` is
the concatenation of the chosen user tables' vectors (UR, CR(u)), standardised with the
training mean/std (kept as buffers, so serving applies the same transform).

Loss: sampled softmax over in-batch negatives (every other positive item of the batch)
plus optionally ``R`` uniformly drawn catalogue items, with the logQ correction of Yi et
al. (RecSys 2019): each logit ``s_bj = <q_b, v_j> / T`` is reduced by ``log Q(j)``, the
log-probability that ``j`` enters the batch as a candidate (in-batch: the item's share
``p_j`` of the training positives; random: ``1 / N``). Without it popular items, which
appear as in-batch negatives far more often, are pushed down too hard. Other rows whose
item equals row b's own positive are masked (they are not negatives of b).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from transfer import RetrievalAdapter

log = logging.getLogger(__name__)


class QueryTower(nn.Module):
    """``forward(x [B, d_in]) -> q [B, d_item]``: standardise, then ``transfer.RetrievalAdapter``'s
    user side (linear, or one ReLU layer of ``hidden`` units then linear)."""

    def __init__(self, in_dim: int, item_dim: int, hidden: int = 0):
        super().__init__()
        self.adapter = RetrievalAdapter(in_dim, item_dim, num_tasks=1, hidden=hidden)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.in_dim, self.item_dim, self.hidden = in_dim, item_dim, hidden

    def set_standardisation(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(x.mean(0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(x.std(0) + 1e-6, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.user_vectors((x - self.mean) / self.std)[:, 0]

    @torch.no_grad()
    def encode(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Query vectors (n, d_item) float32 for inputs (n, d_in)."""
        self.eval()
        out = [self(torch.as_tensor(x[a : a + batch], dtype=torch.float32)).numpy() for a in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.item_dim), np.float32)


def sampled_softmax_loss(
    q: torch.Tensor,
    pos_items: torch.Tensor,
    item_vecs: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float = 1.0,
    rand_items: torch.Tensor | None = None,
    rand_vecs: torch.Tensor | None = None,
    rand_log_q: float | None = None,
) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy of each row's own positive.

    q [B, d] queries; pos_items [B] item ids of the positives; item_vecs [B, d] their
    vectors; log_q [B] log sampling probability of each in-batch item (None = no
    correction); rand_items [R] / rand_vecs [R, d]: extra uniform negatives with log
    probability ``rand_log_q`` (a random item equal to row b's positive is masked for b).
    """
    logits = q @ item_vecs.T / temperature  # [B, B]
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = pos_items[:, None] == pos_items[None, :]
    eye = torch.eye(len(pos_items), dtype=torch.bool, device=q.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if rand_vecs is not None and len(rand_vecs):
        r = q @ rand_vecs.T / temperature
        if log_q is not None and rand_log_q is not None:
            r = r - rand_log_q
        r = r.masked_fill(pos_items[:, None] == rand_items[None, :], float("-inf"))
        logits = torch.cat([logits, r], dim=1)
    target = torch.arange(len(pos_items), device=q.device)
    return nn.functional.cross_entropy(logits, target)


def popularity_column(counts: np.ndarray) -> np.ndarray:
    """(n, 1) float32: log share of positives ``log((c_i + 1) / (sum c + n))`` per item.

    Appended to IR it gives the index an item-bias coordinate: ``<[q, w], [IR_i, log p_i]>
    = <q, IR_i> + w log p_i``, so the tower can express popularity, which a frozen IR space
    need not encode linearly (an inner product over IR alone has no item bias). Shares, not
    counts, so the column keeps its scale as the log grows."""
    c = np.asarray(counts, dtype=np.float64)
    return np.log((c + 1.0) / (c.sum() + len(c)))[:, None].astype(np.float32)


@dataclass
class TowerFit:
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
    logq: bool = True,
    seed: int = 0,
    evaluate: Callable[[QueryTower], float] | None = None,
    patience: int = 2,
) -> TowerFit:
    """Fit a :class:`QueryTower` on positive pairs (x [P, d_in], item_rows [P] into
    item_vecs [N, d_item], frozen). ``evaluate(tower) -> score`` (higher is better, e.g.
    validation recall@50) picks the best epoch and stops after ``patience`` epochs
    without improvement; without it all ``epochs`` run."""
    if len(x) != len(item_rows) or len(x) == 0:
        raise ValueError(f"query tower: {len(x)} inputs for {len(item_rows)} positive items")
    # one thread: the tower is tiny, and OpenMP workers spinning on a busy machine cost
    # far more than they save (measured: minutes instead of seconds at load average 25)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(
            x,
            item_rows,
            item_vecs,
            hidden,
            epochs,
            batch_size,
            lr,
            weight_decay,
            temperature,
            random_negatives,
            logq,
            seed,
            evaluate,
            patience,
        )
    finally:
        torch.set_num_threads(threads)


def _fit(
    x,
    item_rows,
    item_vecs,
    hidden,
    epochs,
    batch_size,
    lr,
    weight_decay,
    temperature,
    random_negatives,
    logq,
    seed,
    evaluate,
    patience,
) -> TowerFit:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tower = QueryTower(x.shape[1], item_vecs.shape[1], hidden)
    tower.set_standardisation(x)
    xs = torch.as_tensor(x, dtype=torch.float32)
    rows = torch.as_tensor(item_rows, dtype=torch.long)
    vecs = torch.tensor(np.asarray(item_vecs), dtype=torch.float32)
    n_items = len(item_vecs)
    counts = np.bincount(item_rows, minlength=n_items).astype(np.float64)
    log_p = torch.as_tensor(np.log(np.maximum(counts, 1) / len(item_rows)), dtype=torch.float32)
    opt = torch.optim.Adam(tower.parameters(), lr=lr, weight_decay=weight_decay)
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
            rand = torch.randint(0, n_items, (random_negatives,), generator=g) if random_negatives else None
            loss = sampled_softmax_loss(
                tower(xs[idx]),
                b_items,
                vecs[b_items],
                log_p[b_items] if logq else None,
                temperature,
                rand,
                vecs[rand] if rand is not None else None,
                -math.log(n_items) if rand is not None else None,
            )
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
