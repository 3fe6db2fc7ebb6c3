"""The small downstream ranking model: field embeddings + MLP + one head per task.

With ``rep_dims`` empty it is the *vanilla* model; otherwise each published vector
(``rep:<name>`` [B, d]) passes a :class:`~transfer.MissingDefault` and enters through
the configured adapter:

- ``linear``: ``[flatten(E), W_1 r_1, ..., W_k r_k] -> MLP``
- ``gate``:   ``flatten(E * sigmoid(W [r_1..r_k] + b)) -> MLP``; ``gate_mode`` says which
  vectors drive which fields' gates: ``all`` (every field by every joined vector),
  ``cross`` (user-side fields by the item-side vectors IR, CR(i) and item-side fields by
  the user-side vectors UR, CR(u): the gated embedding then carries a user x item
  product), ``own`` (each side by its own vectors).
- ``crossed_pairs`` (any adapter): ``Proj(z_u * z_i)`` per (user table, item table) pair
  is concatenated too (transfer.CrossedEmbeddingToken), handing the MLP the
  user-item interaction of the pretrained space directly.
- ``gate_linear``: both (gated embeddings and the concatenated projections). A gate alone
  can only rescale embeddings, so a signal that is an interaction of the user and item
  vectors (``<z_u, z_i>``) barely passes it; the concatenation carries it.

Shapes: B batch, F fields (categorical columns + pooled sequence), D = ``emb_dim``,
T tasks. ``forward(batch) -> logits [B, T]``.
"""

from __future__ import annotations

import torch
from torch import nn

from downstream.data import PRESENT_PREFIX, REP_PREFIX
from transfer import CrossedEmbeddingToken, GateAdapter, LinearAdapter, MissingDefault, RetrievalAdapter


class FieldEmbedding(nn.Module):
    """One embedding table per categorical column; ``hist_seq`` mean-pooled with the
    sequence item field's table. ``forward(batch) -> E [B, F, D]``."""

    def __init__(self, vocab_sizes: dict[str, int], emb_dim: int, seq_field: str | None, init_std: float = 0.05):
        super().__init__()
        self.columns = list(vocab_sizes)
        self.tables = nn.ModuleDict({c: nn.Embedding(n, emb_dim) for c, n in vocab_sizes.items()})
        for t in self.tables.values():
            nn.init.normal_(t.weight, std=init_std)
        self.seq_field = seq_field

    @property
    def num_fields(self) -> int:
        return len(self.columns) + (1 if self.seq_field else 0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fields = [self.tables[c](batch[c]) for c in self.columns]
        if self.seq_field:
            seq = self.tables[self.seq_field](batch["hist_seq"])  # [B, L, D]
            m = batch["hist_mask"].unsqueeze(-1).float()
            fields.append((seq * m).sum(1) / m.sum(1).clamp_min(1.0))
        return torch.stack(fields, dim=1)


class RepresentationInput(nn.Module):
    """Published vectors of a batch, normalised, with learned defaults where absent.

    ``forward(batch) -> {name: [B, d]}``.
    """

    def __init__(self, rep_dims: dict[str, int], normalise: bool = True):
        super().__init__()
        self.names = list(rep_dims)
        self.defaults = nn.ModuleDict({n: MissingDefault(d) for n, d in rep_dims.items()})
        # No affine: the adapter's W already scales; LN only evens out the tables' scales.
        self.norms = nn.ModuleDict(
            {
                n: (nn.LayerNorm(d, elementwise_affine=False) if normalise else nn.Identity())
                for n, d in rep_dims.items()
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for n in self.names:
            got = batch[REP_PREFIX + n].shape[-1]
            want = self.defaults[n].default.shape[0]
            if got != want:
                # a table republished at another width: refuse, never reshape or truncate
                raise ValueError(f"table {n}: vectors of dim {got}, the model was trained with dim {want}")
        return {
            n: self.defaults[n](self.norms[n](batch[REP_PREFIX + n]), batch[PRESENT_PREFIX + n]) for n in self.names
        }


def gate_groups(
    embed: FieldEmbedding, reps: list[str], mode: str, item_fields: list[str]
) -> list[tuple[list[int], list[str]]]:
    """Which fields (indices into ``E``'s F axis) each gate covers, and the joined tables
    that drive it. A side with no vector of the other side joined falls back to all."""
    fields = embed.columns + (["hist_seq"] if embed.seq_field else [])
    if mode == "all":
        return [(list(range(len(fields))), list(reps))]
    if mode not in ("cross", "own"):
        raise ValueError(f"gate_mode must be 'all', 'cross' or 'own', got {mode!r}")
    item_idx = [k for k, f in enumerate(fields) if f in set(item_fields)]
    user_idx = [k for k in range(len(fields)) if k not in item_idx]
    user_reps = [r for r in reps if r.startswith("user_")]
    item_reps = [r for r in reps if r.startswith("item_")]
    src_user, src_item = (item_reps, user_reps) if mode == "cross" else (user_reps, item_reps)
    return [(idx, src or list(reps)) for idx, src in ((user_idx, src_user), (item_idx, src_item)) if idx]


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RankingModel(nn.Module):
    """Embeddings + shared MLP + per-task linear heads; optional transferred vectors."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        num_tasks: int,
        *,
        emb_dim: int = 16,
        hidden: list[int] = (128, 64),
        seq_field: str | None = None,
        rep_dims: dict[str, int] | None = None,
        adapter: str = "gate",
        rep_norm: bool = True,
        dropout: float = 0.0,
        crossed_pairs: list[tuple[str, str]] | None = None,
        gate_mode: str = "all",
        gate_bias: float = 2.0,
        gate_zero_init: bool = False,
        item_fields: list[str] | None = None,
        emb_init_std: float = 0.05,
    ):
        super().__init__()
        self.embed = FieldEmbedding(vocab_sizes, emb_dim, seq_field, emb_init_std)
        F = self.embed.num_fields
        rep_dims = dict(rep_dims or {})
        self.adapter_kind = adapter if rep_dims else "none"
        self.reps = RepresentationInput(rep_dims, rep_norm) if rep_dims else None
        in_dim = F * emb_dim
        if self.adapter_kind in ("linear", "gate_linear"):
            self.linear = nn.ModuleDict({n: LinearAdapter(d, emb_dim) for n, d in rep_dims.items()})
            in_dim += emb_dim * len(rep_dims)
        if self.adapter_kind in ("gate", "gate_linear"):
            self.gate_groups = gate_groups(self.embed, list(rep_dims), gate_mode, item_fields or [])
            self.gates = nn.ModuleList(
                [
                    GateAdapter(sum(rep_dims[n] for n in src), len(idx), emb_dim, gate_bias, gate_zero_init)
                    for idx, src in self.gate_groups
                ]
            )
        if self.adapter_kind not in ("none", "linear", "gate", "gate_linear"):
            raise ValueError(f"adapter must be 'linear', 'gate' or 'gate_linear', got {adapter!r}")
        self.crossed_pairs = [tuple(p) for p in (crossed_pairs or [])]
        for u, i in self.crossed_pairs:
            if u not in rep_dims or i not in rep_dims or rep_dims[u] != rep_dims[i]:
                raise ValueError(f"crossed pair ({u}, {i}) needs both tables joined with equal dims; have {rep_dims}")
        self.cross = nn.ModuleList([CrossedEmbeddingToken(rep_dims[u], emb_dim) for u, _ in self.crossed_pairs])
        in_dim += emb_dim * len(self.crossed_pairs)
        hidden = list(hidden)
        self.bottom = mlp([in_dim, *hidden], dropout)
        self.heads = nn.ModuleList([nn.Linear(hidden[-1] if hidden else in_dim, 1) for _ in range(num_tasks)])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(batch)  # [B, F, D]
        if self.adapter_kind == "none":
            parts = [emb.flatten(1)]
        else:
            reps = self.reps(batch)
            if self.adapter_kind in ("gate", "gate_linear"):
                gated = emb.clone()
                for g, (idx, src) in zip(self.gates, self.gate_groups):
                    gated[:, idx] = g(emb[:, idx], torch.cat([reps[n] for n in src], dim=-1))
                parts = [gated.flatten(1)]
            else:
                parts = [emb.flatten(1)]
            if self.adapter_kind in ("linear", "gate_linear"):
                parts += [self.linear[n](reps[n]) for n in self.reps.names]
            parts += [c(reps[u], reps[i]) for c, (u, i) in zip(self.cross, self.crossed_pairs)]
        h = self.bottom(torch.cat(parts, dim=-1))
        return torch.cat([head(h) for head in self.heads], dim=-1)


class RetrievalRanker(nn.Module):
    """Model-level transfer as a ranker: ``<A_t(r_u), IR(i)> + b_t`` (transfer.RetrievalAdapter).

    Uses only the published vectors (``user`` table and ``item_ir``), no scenario features;
    vectors are not normalised, so the inner product stays in the LFM's IR geometry.
    """

    def __init__(self, rep_dims: dict[str, int], user: str, num_tasks: int, hidden: int = 0):
        super().__init__()
        if user not in rep_dims or "item_ir" not in rep_dims:
            raise ValueError(f"model-level transfer needs tables {user!r} and 'item_ir'; have {sorted(rep_dims)}")
        self.user = user
        self.reps = RepresentationInput({user: rep_dims[user], "item_ir": rep_dims["item_ir"]}, normalise=False)
        self.adapter = RetrievalAdapter(rep_dims[user], rep_dims["item_ir"], num_tasks, hidden)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        r = self.reps(batch)
        return self.adapter(r[self.user], r["item_ir"])
