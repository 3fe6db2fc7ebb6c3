"""studies/: the studies, apart from the daily path (nothing the daily run imports lives here).

Each study has a frozen config in ``configs/studies/`` and the command that reproduces its
numbers (docs/studies.md); ``python -m studies transfer|rankup|rankup-defaults|ablation`` runs them
(:mod:`studies.cli`), ``lfm4ads experiment transfer|rankup`` runs the first two on a run
root it prepares first.

- :func:`run_transfer_experiment` / :class:`TransferExperimentConfig`: the LFM4Ads transfer
  table (:mod:`studies.transfer_table`; its cells :mod:`studies.cells`, the choice on
  validation :mod:`studies.selection`).
- :func:`run_rankup_experiment` / :class:`RankUpExperimentConfig`: RankMixer vs RankUp
  components (:mod:`studies.rankup_ablation`).
- :func:`run_ablation` / :class:`AblationConfig`: the foundation-model ablation
  (:mod:`studies.pretrain_ablation`).
- :func:`run_study`: a transfer or RankUp study on a run root, typed (:mod:`studies.run`).

Layering: a study may import every stage but ``pipelines``; ``pipelines`` may import studies.
"""

from __future__ import annotations

from contracts.lazy import lazy_exports

# name -> module; loaded on first use, so that `lfm4ads --help` (which needs only the names
# of the studies, studies.names) does not import torch
_WHERE = {
    "AblationConfig": "studies.pretrain_ablation",
    "run_ablation": "studies.pretrain_ablation",
    "RankUpExperimentConfig": "studies.rankup_ablation",
    "run_rankup_experiment": "studies.rankup_ablation",
    "Study": "studies.names",
    "run_study": "studies.run",
    "TransferExperimentConfig": "studies.transfer_config",
    "run_transfer_experiment": "studies.transfer_table",
}
__all__ = sorted(_WHERE)


__getattr__ = lazy_exports(__name__, _WHERE)
