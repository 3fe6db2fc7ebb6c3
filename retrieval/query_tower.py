"""The query tower: a small adapter from the frozen LFM's user side into the IR space.

Model-level transfer (LFM4Ads "standalone retrieval"): the foundation model is frozen, its
published item vectors IR are the index, and only a small network ``A`` is trained so
that ``<A(x_u), IR(i)>`` is high for the items ``i`` user ``u`` engages with. ``x_u`` is
the concatenation of the chosen user tables' vectors (UR, CR(u)), standardised with the
training mean/std (kept as buffers, so serving applies the same transform).

The loss: retrieval/sampled_softmax.py; the training loop: retrieval/query_training.py;
the popularity column and behaviour-sequence inputs: retrieval/query_features.py.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from transfer import RetrievalAdapter


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
