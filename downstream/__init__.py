"""downstream/: scenario ranking models that consume the published representations.

Public surface:

- :class:`DownstreamConfig`: root config of ``lfm4ads downstream``.
- :func:`train_and_evaluate`: one scenario, vanilla vs transfer, test AUC per task.
- :class:`RankingModel`: the small embeddings + MLP multi-task model.
- :class:`RankUpConfig`, :class:`TokenMixerRanker`: RankUp and the RankMixer baseline.

The studies built on these (the transfer table, RankMixer vs RankUp) live in ``studies/``.
"""

from importlib import import_module
from typing import TYPE_CHECKING

# Lazy: the run config (and every `lfm4ads` start-up) needs DownstreamConfig only; the
# models pull in torch, which costs seconds per process.
_EXPORTS = {
    "DownstreamConfig": "downstream.config",
    "train_and_evaluate": "downstream.evaluate",
    "RankingModel": "downstream.model",
    "RankUpConfig": "downstream.rankup",
    "TokenMixerRanker": "downstream.rankup",
}

if TYPE_CHECKING:
    from downstream.config import DownstreamConfig
    from downstream.evaluate import train_and_evaluate
    from downstream.model import RankingModel
    from downstream.rankup import RankUpConfig, TokenMixerRanker


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'downstream' has no attribute {name!r}")


__all__ = [
    "DownstreamConfig",
    "RankUpConfig",
    "RankingModel",
    "TokenMixerRanker",
    "train_and_evaluate",
]
