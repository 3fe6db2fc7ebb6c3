"""pretrain/: the LFM4Ads foundation model (three towers, TokenFormer user tower, DCNv2 mix
tower with ad/content branches) trained with Ray Train; checkpoints with a manifest.

Public surface: configs, :class:`FeatureEncoder`, :class:`FoundationModel`,
:func:`train_foundation_model`, :func:`load_checkpoint` / :func:`latest_checkpoint`,
and the metrics later stages import.
"""

from typing import TYPE_CHECKING

from contracts.lazy import lazy_exports

# Lazy: a Ray Data read task imports pretrain.log_reader (pyarrow only); importing this
# package must not pull in torch for it (a fresh Ray worker per read task pays each import).
_EXPORTS = {
    "LoadedModel": "pretrain.checkpoint",
    "latest_checkpoint": "pretrain.checkpoint",
    "load_checkpoint": "pretrain.checkpoint",
    "ModelConfig": "pretrain.config",
    "PretrainConfig": "pretrain.config",
    "TrainConfig": "pretrain.config",
    "FeatureEncoder": "pretrain.features",
    "auc": "pretrain.metrics",
    "effective_rank": "pretrain.metrics",
    "gauc": "pretrain.metrics",
    "logloss": "pretrain.metrics",
    "FoundationModel": "pretrain.model",
    "train_foundation_model": "pretrain.train",
}

if TYPE_CHECKING:
    from pretrain.checkpoint import LoadedModel, latest_checkpoint, load_checkpoint
    from pretrain.config import ModelConfig, PretrainConfig, TrainConfig
    from pretrain.features import FeatureEncoder
    from pretrain.metrics import auc, effective_rank, gauc, logloss
    from pretrain.model import FoundationModel
    from pretrain.train import train_foundation_model


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "FeatureEncoder",
    "FoundationModel",
    "LoadedModel",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "auc",
    "effective_rank",
    "gauc",
    "latest_checkpoint",
    "load_checkpoint",
    "logloss",
    "train_foundation_model",
]
