"""downstream/: scenario ranking models that consume the published representations.

Public surface:

- :class:`DownstreamConfig`: root config of ``lfm4ads downstream``.
- :func:`train_and_evaluate`: one scenario, vanilla vs transfer, test AUC per task.
- :class:`RankingModel`: the small embeddings + MLP multi-task model.
- :class:`RankUpConfig`, :class:`TokenMixerRanker`: RankUp and the RankMixer baseline.
- :func:`run_transfer_experiment` / :class:`TransferExperimentConfig` and
  :func:`run_rankup_experiment` / :class:`RankUpExperimentConfig`: the two studies
  (``lfm4ads experiment transfer|rankup``).
"""

from downstream.config import DownstreamConfig
from downstream.evaluate import train_and_evaluate
from downstream.experiments import (
    RankUpExperimentConfig,
    TransferExperimentConfig,
    run_rankup_experiment,
    run_transfer_experiment,
)
from downstream.model import RankingModel
from downstream.rankup import RankUpConfig, TokenMixerRanker

__all__ = [
    "DownstreamConfig",
    "RankUpConfig",
    "RankUpExperimentConfig",
    "RankingModel",
    "TokenMixerRanker",
    "TransferExperimentConfig",
    "run_rankup_experiment",
    "run_transfer_experiment",
    "train_and_evaluate",
]
