"""TokenFormer-style layers (papers.md section 4): BFTS attention masks and NLIR.

Token stream per user: ``[F field tokens | L behaviour tokens]`` (N = F + L positions).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.config import ModelConfig

PHI = {"silu": F.silu, "sigmoid": torch.sigmoid, "gelu": F.gelu}


def bfts_windows(cfg: ModelConfig) -> list[int | None]:
    """Window per layer, bottom up: None = full attention (the lowest ``bfts_full_layers``),
    then ``bfts_window`` shrinking by ``bfts_shrink`` per layer, floored at ``bfts_min_window``."""
    out: list[int | None] = []
    for layer in range(cfg.user_layers):
        if layer < cfg.bfts_full_layers:
            out.append(None)
        else:
            k = layer - cfg.bfts_full_layers
            out.append(max(cfg.bfts_min_window, int(round(cfg.bfts_window * cfg.bfts_shrink**k))))
    return out


def bfts_mask(num_fields: int, seq_len: int, window: int | None, global_fields: bool = True) -> torch.Tensor:
    """[N, N] bool, True = query i may attend key j.

    ``window`` None: everything. Otherwise position i sees j iff ``|i - j| <= window`` over
    the whole stream; with ``global_fields`` field tokens also see and are seen by all.
    Every token always sees itself (no empty rows).
    """
    n = num_fields + seq_len
    if window is None:
        return torch.ones(n, n, dtype=torch.bool)
    pos = torch.arange(n)
    mask = (pos[:, None] - pos[None, :]).abs() <= window
    if global_fields and num_fields:
        mask[:num_fields, :] = True
        mask[:, :num_fields] = True
    return mask


class NLIR(nn.Module):
    """TokenFormer's non-linear interaction representation, read as a one-sided non-linear
    multiplicative transform of the hidden state (papers.md section 4; the exact form is open):

        update(x) = (W_a x + b_a) * phi(W_b x + b_b)        W_a, W_b: [D, D]

    The layer adds it to the residual stream, ``h <- h + update(LN(h))``. phi acts on one
    operand only, so one side stays linear in x; there is no output projection and no
    hidden expansion (that would make it a gated FFN). [..., D] -> [..., D].
    """

    def __init__(self, d: int, phi: str, dropout: float = 0.0):
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.phi = PHI[phi]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.a(x) * self.phi(self.b(x)))


class SwiGLUFFN(nn.Module):
    """The earlier reading, kept as an ablation: a gated FFN
    ``W_o((W_a x) * phi(W_b x))`` with a ``hidden``-wide inner layer. [..., D] -> [..., D]."""

    def __init__(self, d: int, hidden: int, phi: str, dropout: float = 0.0):
        super().__init__()
        self.a = nn.Linear(d, hidden)
        self.b = nn.Linear(d, hidden)
        self.o = nn.Linear(hidden, d)
        self.phi = PHI[phi]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.o(self.a(x) * self.phi(self.b(x))))


class FFN(nn.Module):
    """Plain GELU FFN update (the no-NLIR ablation; the layer adds the residual). [..., D] -> [..., D]."""

    def __init__(self, d: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class TokenFormerLayer(nn.Module):
    """Pre-LN block: masked multi-head self-attention, then NLIR (or an FFN), each added to the
    residual: ``h <- h + Attn(LN1(h))``, ``h <- h + NLIR(LN2(h))``. [B, N, D] -> [B, N, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.num_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        hidden = cfg.ffn_mult * d
        if cfg.nlir == "off":
            self.mix: nn.Module = FFN(d, hidden, cfg.dropout)
        elif cfg.nlir_form == "swiglu":
            self.mix = SwiGLUFFN(d, hidden, cfg.nlir, cfg.dropout)
        else:
            self.mix = NLIR(d, cfg.nlir, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``attn_mask`` [B, N, N] bool (True = may attend)."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.unsqueeze(1))
        h = h + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return h + self.mix(self.ln2(h))
