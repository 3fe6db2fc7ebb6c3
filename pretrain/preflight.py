"""Every check of a pretraining request that needs no training rows: the device, the task
names the config mentions, the day split, an existing ``model_version``, and a warm-start
source of the same architecture. They run before any Ray task or worker starts."""

from __future__ import annotations

from pathlib import Path

from contracts import DatasetSpec
from pretrain.checkpoint import LoadedModel, load_checkpoint
from pretrain.config import PretrainConfig, TrainConfig
from pretrain.device import check_device_config


def preflight(cfg: PretrainConfig, spec: DatasetSpec, checkpoint_root: Path) -> LoadedModel | None:
    """Every config check that needs no training rows: device, task names, version, warm start.
    Returns the warm-start checkpoint (``cfg.init_from``), or None."""
    check_device_config(cfg.train.use_gpu, cfg.train.amp)
    check_task_names(cfg.train, spec)
    if cfg.model_version and (checkpoint_root / cfg.model_version).exists():
        raise FileExistsError(
            f"checkpoint {checkpoint_root / cfg.model_version} already exists; pick another model_version"
        )
    if not cfg.init_from:
        return None
    init = load_checkpoint(cfg.init_from, expect_spec=spec)
    if init.manifest.model_config_data != cfg.model.model_dump(mode="json"):
        raise ValueError(
            f"init_from {cfg.init_from}: its model config differs from this config's `model` section; "
            "warm start needs the same architecture"
        )
    return init


def check_task_names(tcfg: TrainConfig, spec: DatasetSpec) -> None:
    named = {
        "train.pairwise_alpha": list(tcfg.pairwise_alpha),
        "train.task_weights": list(tcfg.task_weights),
        "train.early_stop_task": [tcfg.early_stop_task] if tcfg.early_stop_task else [],
    }
    for key, tasks in named.items():
        unknown = [t for t in tasks if t not in spec.tasks]
        if unknown:
            raise ValueError(f"{key}: unknown task(s) {unknown}; the log's tasks are {spec.tasks}")


def check_days(train_days: list[str], valid_days: list[str]) -> None:
    if not train_days:
        raise ValueError("train_days is empty")
    if not valid_days:
        raise ValueError("valid_days is empty")
    overlap = sorted(set(train_days) & set(valid_days))
    if overlap:
        raise ValueError(f"days {overlap} are in both train_days and valid_days")
    if max(train_days) >= min(valid_days):
        raise ValueError(
            f"time split violated: last train day {max(train_days)} is not before first valid day {min(valid_days)}"
        )
