"""pretrain/: the LFM4Ads foundation model (three towers, TokenFormer user tower, DCNv2 mix
tower with ad/content branches) trained with Ray Train; checkpoints with a manifest.

Public surface: configs, :class:`FeatureEncoder`, :class:`FoundationModel`,
:func:`train_foundation_model`, :func:`load_checkpoint` / :func:`latest_checkpoint`,
and the metrics later stages import.
"""

from pretrain.checkpoint import LoadedModel, latest_checkpoint, load_checkpoint
from pretrain.config import ModelConfig, PretrainConfig, TrainConfig
from pretrain.features import FeatureEncoder
from pretrain.metrics import auc, effective_rank, gauc, logloss
from pretrain.model import FoundationModel
from pretrain.train import train_foundation_model

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
