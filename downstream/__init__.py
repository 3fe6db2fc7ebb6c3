"""downstream/: scenario ranking models that consume the published representations.

Public surface:

- :class:`DownstreamConfig`: root config of ``lfm4ads downstream``.
- :func:`train_and_evaluate`: one scenario, vanilla vs transfer, test AUC per task.
- :class:`RankingModel`: the small embeddings + MLP multi-task model.
- :class:`RankUpConfig`, :class:`TokenMixerRanker`: RankUp and the RankMixer baseline.

The studies built on these (the transfer table, RankMixer vs RankUp) live in ``studies/``.
"""

from typing import TYPE_CHECKING

from contracts.lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "DownstreamConfig",
    "RankUpConfig",
    "RankingModel",
    "TokenMixerRanker",
    "train_and_evaluate",
]
