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
item equals row b's own positive are masked (they are not negatives of b). ``logq`` may
be a weight in [0, 1] (partial correction).

Options measured in ``benchmarks.retrieval_quality`` (docs/retrieval.md): a popularity
column on the item side (all-time share, or time-decayed: :func:`recent_popularity`, point
in time per training pair), with a learned per-user weight or a fixed weight (popularity
as a prior the tower adds to); the behaviour sequence in IR space as input
(:func:`history_means`); an item side published with the index (learned item bias,
residual IR adapter): :meth:`QueryTower.encode_items` is what the index holds.
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
    """``forward(x [B, d_in]) -> q [B, d_out]``: standardise, then ``transfer.RetrievalAdapter``'s
    user side (linear, or one ReLU layer of ``hidden`` units then linear).

    Item side (optional, both published with the index so the served scores are the trained
    ones): ``item_adapter`` ``"linear"`` / ``"mlp"`` maps the item's IR residually,
    ``g(IR) = IR + W IR`` (``W`` starts at zero) or ``IR + W2 relu(W1 IR)``; ``pass_through``
    trailing columns of the item vectors (the popularity column) are kept as they are.
    ``item_bias`` adds a learned per-item bias ``b_i`` (items of the training catalogue):
    the item vector gets a coordinate ``b_i`` and the query a constant 1, so
    ``<[q, 1], [g(v_i), b_i]> = <q, g(v_i)> + b_i`` (exact for a FAISS inner product).
    ``prior_weight`` beta: the query's coordinate on the last item column (the popularity
    column) is fixed at beta instead of learned, so every score is ``<q, g(IR_i)> + beta
    log p_i``: popularity as a prior (logit adjustment) and the tower learns what the user
    adds to it.
    """

    def __init__(
        self,
        in_dim: int,
        item_dim: int,
        hidden: int = 0,
        *,
        item_adapter: str = "none",
        pass_through: int = 0,
        num_items: int = 0,
        item_bias: bool = False,
        prior_weight: float | None = None,
    ):
        super().__init__()
        if prior_weight is not None and pass_through < 1:
            raise ValueError("prior_weight needs a pass-through (popularity) column")
        if item_adapter not in ("none", "linear", "mlp"):
            raise ValueError(f"item_adapter must be none, linear or mlp, not {item_adapter!r}")
        if item_bias and num_items < 1:
            raise ValueError("item_bias needs num_items >= 1")
        self.adapter = RetrievalAdapter(in_dim, item_dim, num_tasks=1, hidden=hidden)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.in_dim, self.item_dim, self.hidden = in_dim, item_dim, hidden
        self.item_adapter, self.pass_through, self.item_bias = item_adapter, pass_through, item_bias
        d_ir = item_dim - pass_through
        if item_adapter == "linear":
            self.item_map = nn.Linear(d_ir, d_ir, bias=False)
            nn.init.zeros_(self.item_map.weight)
        elif item_adapter == "mlp":
            self.item_map = nn.Sequential(nn.Linear(d_ir, max(hidden, 16)), nn.ReLU(), nn.Linear(max(hidden, 16), d_ir))
            nn.init.zeros_(self.item_map[2].weight)
            nn.init.zeros_(self.item_map[2].bias)
        else:
            self.item_map = None
        self.bias = nn.Parameter(torch.zeros(num_items)) if item_bias else None
        self.prior_weight = prior_weight

    @property
    def out_dim(self) -> int:
        """Dimension of the query and (indexed) item vectors."""
        return self.item_dim + int(self.item_bias)

    def set_standardisation(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(x.mean(0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(x.std(0) + 1e-6, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.adapter.user_vectors((x - self.mean) / self.std)[:, 0]
        if self.prior_weight is not None:  # the last item column is a fixed-weight prior
            q = torch.cat([q[:, :-1], torch.full((len(q), 1), float(self.prior_weight), dtype=q.dtype)], dim=1)
        if self.item_bias:
            q = torch.cat([q, torch.ones(len(q), 1, dtype=q.dtype)], dim=1)
        return q

    def items(self, vecs: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """Indexed item vectors [N, out_dim] for item vectors [N, item_dim] (IR + pass-through
        columns) and their training-catalogue rows (for the bias; -1 = unknown item: bias 0)."""
        if self.item_map is not None:
            d_ir = self.item_dim - self.pass_through
            ir = vecs[:, :d_ir]
            vecs = torch.cat([ir + self.item_map(ir), vecs[:, d_ir:]], dim=1)
        if self.item_bias:
            if rows is None:
                raise ValueError("item_bias: item rows are needed")
            b = torch.where(rows >= 0, self.bias[rows.clamp(min=0)], torch.zeros((), dtype=vecs.dtype))
            vecs = torch.cat([vecs, b[:, None]], dim=1)
        return vecs

    @torch.no_grad()
    def encode(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Query vectors (n, out_dim) float32 for inputs (n, d_in)."""
        self.eval()
        out = [self(torch.as_tensor(x[a : a + batch], dtype=torch.float32)).numpy() for a in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.out_dim), np.float32)

    @torch.no_grad()
    def encode_items(self, vecs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """What the index holds: (n, out_dim) float32 for item vectors (n, item_dim) and their
        rows in the training catalogue (``None`` = rows 0..n-1; -1 = an item the tower never
        saw: no learned bias). Without an item adapter and bias this is ``vecs`` itself."""
        self.eval()
        v = torch.as_tensor(np.asarray(vecs), dtype=torch.float32)
        r = None
        if self.item_bias:
            r = torch.as_tensor(np.arange(len(v)) if rows is None else np.asarray(rows), dtype=torch.long)
        return self.items(v, r).numpy().astype(np.float32)


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


def history_means(
    users: np.ndarray, item_rows: np.ndarray, item_vecs: np.ndarray, last: int = 20
) -> tuple[np.ndarray, dict]:
    """The behaviour sequence in the item space: per positive event (time-ordered ``users`` /
    ``item_rows``), the mean of ``item_vecs`` over the user's previous ``last`` positives
    (strictly before the event: point in time; zeros when there are none; ``last`` 0 = all),
    and per user the same mean after all events (the state to query with).

    Returns (before [P, d] float32, {user: after [d] float32})."""
    d = item_vecs.shape[1]
    before = np.zeros((len(users), d), np.float32)
    hist: dict = {}
    for k, (u, r) in enumerate(zip(users.tolist(), item_rows.tolist())):
        h = hist.setdefault(u, [])
        if h:
            before[k] = item_vecs[h].mean(0)
        h.append(r)
        if last and len(h) > last:
            del h[0]
    after = {u: item_vecs[h].mean(0).astype(np.float32) for u, h in hist.items()}
    return before, after


def recent_popularity(
    item_rows: np.ndarray, times: np.ndarray, num_items: int, half_life_s: float, at: np.ndarray | float
) -> np.ndarray:
    """Time-decayed popularity as a log share: for each query time ``t`` (an array, or one
    float for the whole catalogue), ``log((c_i(t) + eps) / (sum_j c_j(t) + eps n))`` with
    ``c_i(t) = sum_{k: item_k = i, t_k < t} 2^(-(t - t_k) / half_life_s)`` over the positives
    (``item_rows`` at ``times``, seconds) strictly before ``t``; ``eps`` = 1 / num_items
    keeps unseen items finite.

    ``at`` float -> (num_items, 1) float32: the popularity column of the catalogue at ``t``.
    ``at`` array (one per positive, same order as ``item_rows``, sorted by time) -> (P,)
    float32: the column value of each positive's own item just before it happened (point
    in time: what the column would have said when the pair was made)."""
    item_rows = np.asarray(item_rows, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    eps = 1.0 / num_items
    if np.isscalar(at):
        w = np.where(times < at, np.exp2(-(float(at) - times) / half_life_s), 0.0)
        c = np.bincount(item_rows, weights=w, minlength=num_items)
        return np.log((c + eps) / (c.sum() + eps * num_items))[:, None].astype(np.float32)
    at = np.asarray(at, dtype=np.float64)
    if np.any(np.diff(times) < 0) or np.any(at != times):
        raise ValueError("recent_popularity: per-positive values need at == times, sorted by time")
    val = np.zeros(num_items)  # decayed count per item as of last_t[i]
    last_t = np.zeros(num_items)
    total, total_t = 0.0, times[0] if len(times) else 0.0
    out = np.zeros(len(item_rows), np.float32)
    k = 0
    while k < len(times):  # events at the same time do not see each other
        j = k
        while j < len(times) and times[j] == times[k]:
            j += 1
        t = times[k]
        tot = total * np.exp2(-(t - total_t) / half_life_s)
        for m in range(k, j):
            i = item_rows[m]
            c = val[i] * np.exp2(-(t - last_t[i]) / half_life_s)
            out[m] = np.log((c + eps) / (tot + eps * num_items))
        for m in range(k, j):
            i = item_rows[m]
            val[i] = val[i] * np.exp2(-(t - last_t[i]) / half_life_s) + 1.0
            last_t[i] = t
        total, total_t = tot + (j - k), t
        k = j
    return out
