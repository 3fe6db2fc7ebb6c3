"""downstream/: scenario ranking models that consume the published representations.

Public surface:

- :class:`DownstreamConfig`: root config of ``lfm4ads downstream``.
- :func:`train_and_evaluate`: one scenario, vanilla vs transfer, test AUC per task.
- :class:`RankingModel`: the small embeddings + MLP multi-task model.
- :class:`RankUpConfig`, :class:`TokenMixerRanker`: RankUp and the RankMixer baseline.

The studies built on these (the transfer table, RankMixer vs RankUp) live in ``studies/``.
"""

from downstream.config import DownstreamConfig
from downstream.evaluate import train_and_evaluate
from downstream.model import RankingModel
from downstream.rankup import RankUpConfig, TokenMixerRanker

__all__ = [
    "DownstreamConfig",
    "RankUpConfig",
    "RankingModel",
    "TokenMixerRanker",
    "train_and_evaluate",
]
