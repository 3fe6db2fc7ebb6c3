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

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from contracts import StrictModel
from downstream.model import FieldEmbedding, RepresentationInput
from transfer import CrossedEmbeddingToken


class RankUpConfig(StrictModel):
    """Architecture of the token-mixing ranker. Defaults = full RankUp at toy size."""

    block: Literal["rankmixer", "rankup"] = "rankup"
    split: Literal["semantic", "permutation"] = "permutation"
    num_embeddings: int = Field(2, ge=1, description="K embedding tables (1 = off).")
    global_token: Literal["none", "mlp", "fm"] = "mlp"
    crossed_token: bool = Field(True, description="Proj(z_u * z_i) from the published tables.")
    crossed_pair: tuple[str, str] = Field(("user_ur", "item_ir"), description="(user table, item table).")
    task_tokens: bool = True
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
        return self

    @classmethod
    def rankmixer(cls, **kw) -> "RankUpConfig":
        """The baseline: Post-LN GELU blocks, semantic grouping, one table, mean pool."""
        base = dict(block="rankmixer", split="semantic", num_embeddings=1, global_token="none",
                    crossed_token=False, task_tokens=False)
        return cls(**{**base, **kw})


def token_mix(x: torch.Tensor) -> torch.Tensor:
    """RankMixer's parameter-free mixing with H = T heads: ``[B, T, D] -> [B, T, D]``;
    new token h holds head h of every token."""
    B, T, D = x.shape
    return x.reshape(B, T, T, D // T).transpose(1, 2).reshape(B, T, D)


class PerTokenFFN(nn.Module):
    """Each token its own FFN: GELU ``W2 gelu(W1 x)`` or SwiGLU ``W2 (silu(W1 x) * W3 x)``.

    ``forward([B, T, D]) -> [B, T, D]``; weights [T, D, kD] so tokens never share them.
    """

    def __init__(self, T: int, D: int, mult: int, kind: Literal["gelu", "swiglu"]):
        super().__init__()
        H = D * mult
        self.kind = kind
        self.w1 = nn.Parameter(torch.randn(T, D, H) / D**0.5)
        self.b1 = nn.Parameter(torch.zeros(T, H))
        self.w2 = nn.Parameter(torch.randn(T, H, D) / H**0.5)
        self.b2 = nn.Parameter(torch.zeros(T, D))
        if kind == "swiglu":
            self.w3 = nn.Parameter(torch.randn(T, D, H) / D**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("btd,tdh->bth", x, self.w1) + self.b1
        if self.kind == "swiglu":
            h = nn.functional.silu(h) * torch.einsum("btd,tdh->bth", x, self.w3)
        else:
            h = nn.functional.gelu(h)
        return torch.einsum("bth,thd->btd", h, self.w2) + self.b2


class MixerBlock(nn.Module):
    """One block; Post-LN GELU (RankMixer) or Pre-LN SwiGLU (RankUp). [B, T, D] -> same."""

    def __init__(self, T: int, D: int, mult: int, kind: Literal["rankmixer", "rankup"]):
        super().__init__()
        self.kind = kind
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.ffn = PerTokenFFN(T, D, mult, "gelu" if kind == "rankmixer" else "swiglu")

    def forward(self, x: torch.Tensor, states: list | None = None, prefix: str = "") -> torch.Tensor:
        if self.kind == "rankmixer":
            x = self.ln1(token_mix(x) + x)
            _record(states, prefix + "mixer", x)
            x = self.ln2(self.ffn(x) + x)
        else:
            x = token_mix(self.ln1(x)) + x
            _record(states, prefix + "mixer", x)
            x = self.ffn(self.ln2(x)) + x
        _record(states, prefix + "ffn", x)
        return x


def _record(states: list | None, name: str, x: torch.Tensor) -> None:
    if states is not None:
        states.append((name, x.detach()))


class Tokenizer(nn.Module):
    """Field embeddings [B, K, F, De] -> T_f feature tokens [B, T_f, D].

    Table k's F embeddings are reordered by ``perm[k]`` (identity for semantic grouping),
    concatenated, zero-padded to a multiple of its token count and cut into chunks; each
    chunk has its own projection to D.
    """

    def __init__(self, F: int, De: int, K: int, T_f: int, D: int, permute: bool, seed: int):
        super().__init__()
        if T_f < K:
            raise ValueError(f"{T_f} feature token(s) cannot be shared by {K} embedding tables")
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(F) if permute else np.arange(F) for _ in range(K)])
        self.register_buffer("perm", torch.as_tensor(perms, dtype=torch.long))  # saved with the model
        self.counts = [len(a) for a in np.array_split(np.arange(T_f), K)]
        self.chunk = [-(-F * De // c) for c in self.counts]  # ceil
        self.proj = nn.ParameterList(
            [nn.Parameter(torch.randn(c, w, D) / w**0.5) for c, w in zip(self.counts, self.chunk)]
        )
        self.bias = nn.Parameter(torch.zeros(T_f, D))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        B = emb.shape[0]
        tokens = []
        for k, (c, w) in enumerate(zip(self.counts, self.chunk)):
            flat = emb[:, k, self.perm[k]].reshape(B, -1)
            flat = nn.functional.pad(flat, (0, c * w - flat.shape[1]))
            tokens.append(torch.einsum("btw,twd->btd", flat.view(B, c, w), self.proj[k]))
        return torch.cat(tokens, dim=1) + self.bias


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
        if cfg.global_token == "mlp":
            self.global_f = nn.Sequential(nn.Linear(De, D), nn.ReLU(), nn.Linear(D, D))
        elif cfg.global_token == "fm":
            self.global_f = nn.Linear(De, D)
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
            fields = emb.flatten(1, 2)  # [B, K*F, De]
            if self.cfg.global_token == "fm":
                # FM second-order pooling: 0.5 * ((sum e)^2 - sum e^2), kept per coordinate
                pooled = 0.5 * (fields.sum(1) ** 2 - (fields**2).sum(1))
            else:
                pooled = fields.mean(1)
            toks.insert(0, self.global_f(pooled).unsqueeze(1))
        if self.cfg.crossed_token:
            u, i = self.cfg.crossed_pair
            r = self.reps(batch)
            toks.insert(0, self.cross(r[u], r[i]).unsqueeze(1))
        if self.cfg.task_tokens:
            toks.insert(0, self.task_tok.expand(B, -1, -1))
        return torch.cat(toks, dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states = [] if self.record_states else None
        x = self.tokens(batch)
        _record(states, "tokenizer", x)
        for l, block in enumerate(self.blocks):
            x = block(x, states, f"L{l + 1}.")
        x = self.final_ln(x)
        if states is not None:
            self.states = states
        pooled = x.mean(1)
        if self.cfg.task_tokens:
            return torch.cat(
                [tower(torch.cat([x[:, k], pooled], -1)) for k, tower in enumerate(self.towers)], dim=-1
            )
        return torch.cat([tower(pooled) for tower in self.towers], dim=-1)
