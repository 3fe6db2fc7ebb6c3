"""Mix tower branch: [UR, IR] -> DCNv2 cross layers (optionally SFG) -> MLP -> per-scenario,
per-task heads. The model holds one branch for ad samples and one for content samples."""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrain.config import ModelConfig

ACTS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda x: x}


class FieldGenerator(nn.Module):
    """SFG's generator (papers.md section 5): every field's embedding generated from all
    fields, ``G = act(Linear(F*d -> F*d)(flatten(E))) * gamma``.

    ``forward(E [B, F, d] or flat [B, F*d]) -> G`` of the same shape. Fields of unequal width
    (the mix tower's UR and IR) are handled in the flat form, where the map is the same.
    """

    def __init__(self, width: int, gamma: float = 1.0, act: str = "relu"):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.gamma = gamma
        self.act = ACTS[act]

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (self.act(self.lin(e.flatten(1))) * self.gamma).view(e.shape)


class CrossLayer(nn.Module):
    """DCNv2: ``x_{l+1} = x0 * (W x_l + b) + x_l``.

    With SFG the raw side ``x0`` of the interaction is replaced by the generated embedding of
    layer l, ``x_{l+1} = x_l + G_l(x0) * (W x_l + b)`` (G_l a :class:`FieldGenerator` over the
    mix tower's fields, UR and IR): generated paired with raw, since x_l starts at raw x0.
    [B, D] -> [B, D].
    """

    def __init__(self, d: int, sfg: bool = False, gamma: float = 1.0, act: str = "relu"):
        super().__init__()
        self.w = nn.Linear(d, d)
        self.gen = FieldGenerator(d, gamma, act) if sfg else None

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        side = x0 if self.gen is None else self.gen(x0)
        return x + side * self.w(x)


class MixBranch(nn.Module):
    """One branch. Layer outputs are named ``cross_1..n`` ([B, ur+ir]) and ``mlp_1..m``
    ([B, mlp_dims[k]], after ReLU); ``heads`` gives logits [B, S, T]."""

    def __init__(self, cfg: ModelConfig, num_scenarios: int, num_tasks: int):
        super().__init__()
        d = cfg.ur_dim + cfg.ir_dim
        self.cross = nn.ModuleList(CrossLayer(d, cfg.sfg, cfg.sfg_gamma, cfg.sfg_act) for _ in range(cfg.cross_layers))
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
