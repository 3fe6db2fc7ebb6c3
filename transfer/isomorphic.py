"""Module-level transfer: a downstream model with the foundation model's own structure.

:class:`IsomorphicRanker` is the LFM's path for ad samples (embeddings -> user and item
towers -> ad-branch cross layers -> ad-branch MLP) ending in fresh per-task heads for one
scenario. :func:`isomorphic_from_checkpoint` initialises it from a checkpoint:

- ``k = 0``: only the embedding tables are copied;
- ``k >= 1``: embeddings, both towers (their output is the interaction layers' input, so
  copying layers without them would feed the layers a different space) and the first
  ``k`` interaction layers of the ad branch, counted over ``cross_1..n, mlp_1..m``.

Everything else starts from a fresh initialisation; all of it is then fine-tuned. The
batch must be encoded with the checkpoint's :class:`pretrain.FeatureEncoder`, since the
embedding rows are the checkpoint's vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain import FoundationModel, LoadedModel


class IsomorphicRanker(nn.Module):
    """``forward(batch) -> logits [B, T]`` through the ad branch of ``base``."""

    def __init__(self, base: FoundationModel, num_tasks: int):
        super().__init__()
        base.branches = nn.ModuleDict({"ad": base.branches["ad"]})  # content branch unused here
        base.branches["ad"].heads = nn.Identity()  # replaced by per-scenario task heads below
        self.base = base
        last = base.cfg.mlp_dims[-1]
        self.heads = nn.Linear(last, num_tasks)

    def interaction_layers(self) -> list[nn.Module]:
        br = self.base.branches["ad"]
        return [*br.cross, *br.mlp]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ur, _ = self.base.user_representation(batch)
        x0 = torch.cat([ur, self.base.item_representation(batch)], dim=1)
        br = self.base.branches["ad"]
        x = x0
        for layer in br.cross:
            x = layer(x0, x)
        for layer in br.mlp:
            x = layer(x)
        return self.heads(x)


def isomorphic_from_checkpoint(loaded: LoadedModel, k: int, num_tasks: int | None = None) -> IsomorphicRanker:
    """Fresh :class:`IsomorphicRanker` with embeddings (+ towers and first ``k`` layers) copied
    from ``loaded.model``. Raises ValueError when ``k`` exceeds the interaction layers."""
    src = loaded.model
    fresh = FoundationModel(src.cfg, src.spec, src.vocab_sizes)
    model = IsomorphicRanker(fresh, num_tasks or len(src.tasks))
    n_layers = len(src.branches["ad"].cross) + len(src.branches["ad"].mlp)
    if not 0 <= k <= n_layers:
        raise ValueError(
            f"k={k}: the foundation model has {n_layers} interaction layers (cross + mlp), k must be 0..{n_layers}"
        )
    fresh.embeddings.load_state_dict(src.embeddings.state_dict())
    if k >= 1:
        fresh.user_tower.load_state_dict(src.user_tower.state_dict())
        fresh.item_tower.load_state_dict(src.item_tower.state_dict())
        src_layers = [*src.branches["ad"].cross, *src.branches["ad"].mlp]
        for dst, s in zip(model.interaction_layers()[:k], src_layers[:k]):
            dst.load_state_dict(s.state_dict())
    return model
