"""RankUp and its baseline RankMixer as one configurable token-mixing ranker.

Shapes: B batch, F fields, De = ``emb_dim`` per field, T = ``num_tokens`` (every token,
special ones included), D = ``d_model``, K = ``num_embeddings``, M = tasks.

Pipeline: field embeddings -> tokenizer (T_f feature tokens) -> optional special tokens
(global, crossed pretrained-embedding, one per task) -> L blocks -> heads.

- ``block="rankmixer"`` (Post-LN): ``S = LN(Mix(X) + X)``, ``X' = LN(PFFN_GELU(S) + S)``.
- ``block="rankup"`` (Pre-LN): ``H' = Mix(LN(H)) + H``, ``h_t = SwiGLU_t(LN(h'_t)) + h'_t``.
- ``split="semantic"``: fields in meaning order (user, item, sequence) are concatenated
  and cut into T_f chunks; ``"permutation"``: fields are first shuffled by a fixed seeded
  permutation, stored as a buffer so it is saved with the weights and reused at serving.
- ``num_embeddings`` K > 1: every field has K tables; table k's lookups (under its own
  permutation row) feed the k-th group of feature tokens (assignment rule: all fields in
  every table, tokens split evenly over tables; papers.md leaves it open).
- special tokens take token slots, so T stays fixed across ablations (the mixer needs
  ``D % T == 0``) and each component is compared at equal width.
- heads: with task tokens, ``y_k = Tower_k([x_task_k, mean(H_L)])``; without, every
  head reads ``mean(H_L)`` (RankMixer's mean pool).

``record_states=True`` keeps ``self.states``: [(name, [B, T, D])] after the tokenizer and
after every mixer and FFN, for the effective-rank curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from contracts import DatasetSpec, StrictModel
from downstream.model import FieldEmbedding, RepresentationInput
from downstream.rankup_blocks import GlobalToken, MixerBlock, Tokenizer, record_state
from transfer import CrossedEmbeddingToken

if TYPE_CHECKING:
    from downstream.data import ScenarioData


class RankUpConfig(StrictModel):
    """Architecture of the token-mixing ranker. Defaults = RankUp at toy size, with the
    components chosen on validation (the crossed pretrained-embedding token off)."""

    block: Literal["rankmixer", "rankup"] = "rankup"
    split: Literal["semantic", "permutation"] = "permutation"
    num_embeddings: int = Field(2, ge=1, description="K embedding tables (1 = off).")
    global_token: Literal["none", "mlp", "fm", "fwfm", "dcnv2"] = Field(
        "mlp",
        description="g = f(field embeddings): MLP of their mean, FM / FwFM second-order pooling, or "
        "DCNv2 cross layers over their concatenation; then projected to D.",
    )
    global_cross_layers: int = Field(2, ge=1, description="Cross layers of the dcnv2 global token.")
    global_sfg: bool = Field(
        False,
        description="SFG in the global token's interaction (fm, fwfm, dcnv2): one side of every pair "
        "is the generated embedding G = relu(Linear(F*d -> F*d)(flatten(E))) * gamma.",
    )
    global_sfg_gamma: float = Field(1.0, gt=0)
    crossed_token: bool = Field(
        False,
        description="Proj(z_u * z_i) from the published tables. Off by default: chosen on validation "
        "(docs/downstream.md, RankUp defaults study); the ablation still measures it as +crossed_token.",
    )
    crossed_pair: tuple[str, str] = Field(("user_ur", "item_ir"), description="(user table, item table).")
    task_tokens: bool = True
    input_norm: bool = Field(
        False,
        description="LayerNorm every input token (feature and special) before the first block, so a "
        "token from another source (the crossed pretrained product) cannot outweigh the feature tokens.",
    )
    emb_dim: int = Field(16, ge=1)
    d_model: int = Field(64, ge=1)
    num_tokens: int = Field(8, ge=2, description="T, special tokens included; D % T == 0.")
    num_layers: int = Field(2, ge=1)
    ffn_mult: int = Field(2, ge=1)
    permutation_seed: int = 0

    @model_validator(mode="after")
    def _fits(self) -> "RankUpConfig":
        if self.d_model % self.num_tokens:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_tokens {self.num_tokens} (token mixing)")
        if self.global_sfg and self.global_token not in ("fm", "fwfm", "dcnv2"):
            raise ValueError(f"global_sfg needs global_token fm, fwfm or dcnv2, not {self.global_token!r}")
        return self

    @classmethod
    def rankmixer(cls, **kw) -> "RankUpConfig":
        """The baseline: Post-LN GELU blocks, semantic grouping, one table, mean pool."""
        base = dict(
            block="rankmixer",
            split="semantic",
            num_embeddings=1,
            global_token="none",
            crossed_token=False,
            task_tokens=False,
        )
        return cls(**{**base, **kw})


class TokenMixerRanker(nn.Module):
    """RankUp / RankMixer ranker. ``forward(batch) -> logits [B, M]`` (batch: downstream.data)."""

    def __init__(
        self,
        cfg: RankUpConfig,
        vocab_sizes: dict[str, int],
        num_tasks: int,
        *,
        user_columns: list[str],
        item_columns: list[str],
        seq_field: str | None,
        rep_dims: dict[str, int] | None = None,
    ):
        super().__init__()
        self.cfg, self.num_tasks = cfg, num_tasks
        K, De, D, T = cfg.num_embeddings, cfg.emb_dim, cfg.d_model, cfg.num_tokens
        # semantic order: user fields, item fields, then the pooled sequence
        ordered = {c: vocab_sizes[c] for c in [*user_columns, *item_columns] if c in vocab_sizes}
        ordered.update({c: n for c, n in vocab_sizes.items() if c not in ordered})
        self.embeds = nn.ModuleList([FieldEmbedding(ordered, De, seq_field) for _ in range(K)])
        F = self.embeds[0].num_fields
        n_special = (cfg.global_token != "none") + cfg.crossed_token + (num_tasks if cfg.task_tokens else 0)
        T_f = T - n_special
        if T_f < 1:
            raise ValueError(f"num_tokens {T} leaves no feature token after {n_special} special token(s)")
        self.tokenizer = Tokenizer(F, De, K, T_f, D, cfg.split == "permutation", cfg.permutation_seed)
        if cfg.global_token != "none":
            self.global_f = GlobalToken(
                cfg.global_token, K * F, De, D, cfg.global_cross_layers, cfg.global_sfg, cfg.global_sfg_gamma
            )
        self.reps = None
        if cfg.crossed_token:
            u, i = cfg.crossed_pair
            dims = rep_dims or {}
            if u not in dims or i not in dims:
                raise ValueError(f"crossed token needs tables {u!r} and {i!r} joined; have {sorted(dims)}")
            if dims[u] != dims[i]:
                raise ValueError(f"crossed token needs equal dims, {u} has {dims[u]}, {i} has {dims[i]}")
            self.reps = RepresentationInput({u: dims[u], i: dims[i]})
            self.cross = CrossedEmbeddingToken(dims[u], D)
        if cfg.task_tokens:
            self.task_tok = nn.Parameter(torch.randn(num_tasks, D) * 0.02)
        self.in_ln = nn.LayerNorm(D) if cfg.input_norm else nn.Identity()
        self.blocks = nn.ModuleList([MixerBlock(T, D, cfg.ffn_mult, cfg.block) for _ in range(cfg.num_layers)])
        self.final_ln = nn.LayerNorm(D) if cfg.block == "rankup" else nn.Identity()
        head_in = 2 * D if cfg.task_tokens else D
        self.towers = nn.ModuleList(
            [nn.Sequential(nn.Linear(head_in, D), nn.ReLU(), nn.Linear(D, 1)) for _ in range(num_tasks)]
        )
        self.record_states = False
        self.states: list[tuple[str, torch.Tensor]] = []

    def tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input token matrix [B, T, D]: [task tokens | global | crossed | feature tokens]."""
        emb = torch.stack([e(batch) for e in self.embeds], dim=1)  # [B, K, F, De]
        toks = [self.tokenizer(emb)]
        B = emb.shape[0]
        if self.cfg.global_token != "none":
            toks.insert(0, self.global_f(emb.flatten(1, 2)).unsqueeze(1))  # fields [B, K*F, De]
        if self.cfg.crossed_token:
            u, i = self.cfg.crossed_pair
            r = self.reps(batch)
            toks.insert(0, self.cross(r[u], r[i]).unsqueeze(1))
        if self.cfg.task_tokens:
            toks.insert(0, self.task_tok.expand(B, -1, -1))
        return torch.cat(toks, dim=1)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final token states [B, T, D] (after the last block and, for RankUp, the final LN)."""
        states = [] if self.record_states else None
        x = self.in_ln(self.tokens(batch))
        record_state(states, "tokenizer", x)
        for i, block in enumerate(self.blocks):
            x = block(x, states, f"L{i + 1}.")
        if states is not None:
            self.states = states
        return self.final_ln(x)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens [B, T, D] -> logits [B, M]. With task tokens (slots 0..M-1, see
        :meth:`tokens`) head k reads ``[x[:, k], mean_t x[:, t]]``; without, ``mean_t x[:, t]``."""
        pooled = x.mean(1)
        if self.cfg.task_tokens:
            return self.task_heads(x[:, : self.num_tasks], pooled)
        return torch.cat([tower(pooled) for tower in self.towers], dim=-1)

    def task_heads(self, task_states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``y_k = Tower_k([task_states[:, k], pooled])``: task_states [B, M, D], pooled [B, D] -> [B, M]."""
        return torch.cat(
            [tower(torch.cat([task_states[:, k], pooled], -1)) for k, tower in enumerate(self.towers)], dim=-1
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head_logits(self.encode(batch))


def build_ranker(
    cfg: RankUpConfig, data: "ScenarioData", canon: DatasetSpec, use_sequence: bool = True
) -> TokenMixerRanker:
    """The ranker of ``cfg`` over a scenario's encoded data (the one builder of both RankUp
    studies): fields in meaning order (user id and features, then item id and features,
    from the canonical spec ``canon``), the pooled sequence field when ``use_sequence``,
    and the joined tables' dims for the crossed token."""
    return TokenMixerRanker(
        cfg,
        data.encoder.vocab_sizes,
        len(data.tasks),
        user_columns=["user_id", *canon.user_features],
        item_columns=["item_id", *canon.item_features],
        seq_field=canon.sequence.item_field if use_sequence else None,
        rep_dims=data.rep_dims,
    )
