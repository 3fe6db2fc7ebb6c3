"""Feature-level transfer: how a published vector enters a downstream model.

Shapes: ``B`` batch, ``d`` representation dim, ``F`` feature fields, ``D`` embedding dim.
"""

from __future__ import annotations

import torch
from torch import nn


class MissingDefault(nn.Module):
    """A learned vector stands in for entities absent from the published table.

    ``forward(r [B, d], present [B] bool) -> [B, d]``: ``r`` where present, else the default.
    The default starts at zero (an absent entity initially contributes nothing) and is
    trained like any weight, so the model learns what "unknown entity" should mean.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.default = nn.Parameter(torch.zeros(dim))

    def forward(self, r: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return torch.where(present.unsqueeze(-1), r, self.default.expand_as(r))


class LinearAdapter(nn.Module):
    """Linear baseline: ``W r``, concatenated by the caller next to the embeddings.

    ``forward(r [B, d]) -> [B, out_dim]``.
    """

    def __init__(self, rep_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(rep_dim, out_dim)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.proj(r)


class GateAdapter(nn.Module):
    """Non-linear gate on the downstream embeddings: ``E' = E * sigmoid(W r + b)``.

    ``forward(E [B, F, D] or [B, F*D], r [B, d]) -> same shape as E``. The gate has one
    value per embedding coordinate (F*D). ``b`` starts at ``bias_init`` (+2: the gate
    starts near 0.88 and the downstream model begins close to its vanilla self instead of
    having every embedding halved). ``zero_init`` starts ``W`` at 0, so every gate starts
    at exactly ``sigmoid(b)`` whatever ``r`` is and the model learns how much of ``r`` to
    let in, instead of starting from a random rescaling of its embeddings.
    """

    def __init__(self, rep_dim: int, num_fields: int, emb_dim: int, bias_init: float = 2.0, zero_init: bool = False):
        super().__init__()
        self.num_fields, self.emb_dim = num_fields, emb_dim
        self.proj = nn.Linear(rep_dim, num_fields * emb_dim)
        nn.init.constant_(self.proj.bias, bias_init)
        if zero_init:
            nn.init.zeros_(self.proj.weight)

    def gate(self, r: torch.Tensor) -> torch.Tensor:
        """``[B, d] -> [B, F, D]`` gate values in (0, 1)."""
        return torch.sigmoid(self.proj(r)).view(-1, self.num_fields, self.emb_dim)

    def forward(self, emb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        g = self.gate(r)
        if emb.dim() == 2:
            return emb * g.flatten(1)
        if emb.shape[1:] != g.shape[1:]:
            raise ValueError(
                f"embeddings {tuple(emb.shape)} do not match the gate's [B, {self.num_fields}, {self.emb_dim}]"
            )
        return emb * g


class CrossedEmbeddingToken(nn.Module):
    """RankUp's crossed pretrained-embedding token: ``Proj(z_u * z_i)``.

    ``forward(z_u [B, d], z_i [B, d]) -> [B, out_dim]``. User and item vectors must share a
    space (UR with IR, or CR(u) with CR(i)), hence one ``d``.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, z_u: torch.Tensor, z_i: torch.Tensor) -> torch.Tensor:
        if z_u.shape != z_i.shape or z_u.shape[-1] != self.dim:
            raise ValueError(
                f"crossed token needs z_u, z_i of shape [B, {self.dim}], got {tuple(z_u.shape)} and {tuple(z_i.shape)}"
            )
        return self.proj(z_u * z_i)
