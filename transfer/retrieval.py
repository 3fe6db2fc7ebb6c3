"""Model-level transfer (standalone retrieval): the frozen LFM scores by itself.

A small adapter ``A`` maps the published user vector (UR or CR(u)) into the IR space;
items are ranked by ``<A(r_u), IR(i)>``. Only ``A`` (and a per-task bias) is trained,
which is why the LFM4Ads toy study found this below a downstream model in most
scenarios: the scenario's own features never enter.
"""

from __future__ import annotations

import torch
from torch import nn


class RetrievalAdapter(nn.Module):
    """``forward(r_u [B, d_u], ir [B, d_i]) -> logits [B, T]``: ``<A_t(r_u), ir> + b_t`` per task.

    ``hidden`` 0: ``A_t`` linear; otherwise one ReLU layer of that width (shared by tasks).
    """

    def __init__(self, user_dim: int, item_dim: int, num_tasks: int = 1, hidden: int = 0):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(user_dim, hidden), nn.ReLU()) if hidden else nn.Identity()
        self.proj = nn.Linear(hidden or user_dim, item_dim * num_tasks, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_tasks))
        self.num_tasks, self.item_dim = num_tasks, item_dim

    def user_vectors(self, r_u: torch.Tensor) -> torch.Tensor:
        """Query vectors [B, T, d_i] (what a FAISS search over IR would take)."""
        return self.proj(self.trunk(r_u)).view(-1, self.num_tasks, self.item_dim)

    def forward(self, r_u: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btd,bd->bt", self.user_vectors(r_u), ir) + self.bias
