"""The building blocks of RankUp / RankMixer (:mod:`downstream.rankup`): token mixing, the
per-token FFN, one mixer block, the tokenizer of field embeddings and RankUp's global token.

Shapes: B batch, F fields, De = ``emb_dim`` per field, T tokens, D = ``d_model``, K
embedding tables.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from pretrain.mix_tower import FieldGenerator


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
            record_state(states, prefix + "mixer", x)
            x = self.ln2(self.ffn(x) + x)
        else:
            x = token_mix(self.ln1(x)) + x
            record_state(states, prefix + "mixer", x)
            x = self.ffn(self.ln2(x)) + x
        record_state(states, prefix + "ffn", x)
        return x


def record_state(states: list | None, name: str, x: torch.Tensor) -> None:
    """Append ``(name, x)`` (detached) when recording (``states`` not None)."""
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


class GlobalToken(nn.Module):
    """RankUp's global token ``g = f(field embeddings)``: ``forward(E [B, n, De]) -> [B, D]``.

    - ``mlp``: ``MLP(mean_i e_i)``;
    - ``fm``: ``P(0.5 * ((sum_i e_i)^2 - sum_i e_i^2))`` = ``P(sum_{i<j} e_i * e_j)``, kept per coordinate;
    - ``fwfm``: ``P(sum_{i<j} r_ij e_i * e_j)`` with a learned weight per field pair;
    - ``dcnv2``: ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` over ``x0 = flatten(E)``, then ``P(x_L)``.

    With ``sfg`` one side of every interaction is generated (pretrain.mix_tower.FieldGenerator,
    ``G = relu(Linear(n*De -> n*De)(flatten(E))) * gamma``): FM / FwFM pair raw with generated,
    ``sum_{i<j} r_ij (e_i * g_j + g_i * e_j) / 2`` (r = 1 for FM); DCNv2 uses
    ``x_{l+1} = x_l + flatten(G) * (W_l x_l + b_l)``.
    """

    def __init__(
        self, kind: str, n: int, De: int, D: int, cross_layers: int = 2, sfg: bool = False, gamma: float = 1.0
    ):
        super().__init__()
        self.kind = kind
        self.gen = FieldGenerator(n * De, gamma) if sfg else None
        if kind == "mlp":
            self.f = nn.Sequential(nn.Linear(De, D), nn.ReLU(), nn.Linear(D, D))
        elif kind in ("fm", "fwfm"):
            self.f = nn.Linear(De, D)
            if kind == "fwfm":
                self.r = nn.Parameter(torch.ones(n, n))  # only i < j is used; starts as FM
                self.register_buffer("upper", torch.triu(torch.ones(n, n), 1), persistent=False)
        elif kind == "dcnv2":
            self.cross = nn.ModuleList(nn.Linear(n * De, n * De) for _ in range(cross_layers))
            self.f = nn.Linear(n * De, D)
        else:
            raise ValueError(f"unknown global token {kind!r}")

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.f(e.mean(1))
        g = self.gen(e) if self.gen is not None else e
        if self.kind == "dcnv2":
            x0, side = e.flatten(1), g.flatten(1)
            x = x0
            for lin in self.cross:
                x = x + side * lin(x)
            return self.f(x)
        if self.kind == "fm":
            # sum_{i != j} e_i * g_j / 2 (= sum_{i<j} e_i * e_j when g = e)
            return self.f(0.5 * (e.sum(1) * g.sum(1) - (e * g).sum(1)))
        R = self.r * self.upper
        return self.f(0.5 * (torch.einsum("bid,ij,bjd->bd", e, R, g) + torch.einsum("bid,ij,bjd->bd", g, R, e)))
