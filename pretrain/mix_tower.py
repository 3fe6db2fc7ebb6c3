"""Mix tower branch: [UR, IR] -> DCNv2 cross layers (optionally SFG) -> MLP -> per-scenario,
per-task heads. The model holds one branch for ad samples and one for content samples."""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrain.config import ModelConfig


class CrossLayer(nn.Module):
    """DCNv2: ``x_{l+1} = x0 * (W x_l + b) + x_l``.

    With SFG (papers.md section 5) the raw ``x0`` side is replaced by a generated
    embedding ``G_l = relu(V_l x0) * gamma``: ``x_{l+1} = x_l + G_l * (W x_l + b)``.
    [B, D] -> [B, D].
    """

    def __init__(self, d: int, sfg: bool = False, gamma: float = 1.0):
        super().__init__()
        self.w = nn.Linear(d, d)
        self.gen = nn.Linear(d, d) if sfg else None
        self.gamma = gamma

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        side = x0 if self.gen is None else torch.relu(self.gen(x0)) * self.gamma
        return x + side * self.w(x)


class MixBranch(nn.Module):
    """One branch. Layer outputs are named ``cross_1..n`` ([B, ur+ir]) and ``mlp_1..m``
    ([B, mlp_dims[k]], after ReLU); ``heads`` gives logits [B, S, T]."""

    def __init__(self, cfg: ModelConfig, num_scenarios: int, num_tasks: int):
        super().__init__()
        d = cfg.ur_dim + cfg.ir_dim
        self.cross = nn.ModuleList(CrossLayer(d, cfg.sfg, cfg.sfg_gamma) for _ in range(cfg.cross_layers))
        dims = [d, *cfg.mlp_dims]
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:]))
        self.heads = nn.Linear(dims[-1], num_scenarios * num_tasks)
        self.num_scenarios, self.num_tasks = num_scenarios, num_tasks

    def layer_names(self) -> list[str]:
        return [f"cross_{i + 1}" for i in range(len(self.cross))] + [f"mlp_{i + 1}" for i in range(len(self.mlp))]

    def forward(self, x0: torch.Tensor, keep: set[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x0 [B, ur+ir] -> (logits [B, S, T], {layer name: output} for names in ``keep``)."""
        kept: dict[str, torch.Tensor] = {}
        x = x0
        for i, layer in enumerate(self.cross):
            x = layer(x0, x)
            if keep is not None and f"cross_{i + 1}" in keep:
                kept[f"cross_{i + 1}"] = x
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if keep is not None and f"mlp_{i + 1}" in keep:
                kept[f"mlp_{i + 1}"] = x
        return self.heads(x).view(-1, self.num_scenarios, self.num_tasks), kept
