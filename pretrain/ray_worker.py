"""The body of one Ray Train worker: DDP over this worker's shard of each epoch, a
checkpoint per epoch from rank 0, early stopping agreed by all ranks.

Runs inside the ``TorchTrainer`` that :func:`pretrain.ray_fit.fit_with_ray_train` starts;
``config`` is the dict it builds (configs as JSON, the encoder as JSON, the file plan,
object-store refs to the validation arrays and the warm-start weights).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from contracts import DatasetSpec
from pretrain.config import ModelConfig, TrainConfig
from pretrain.data import Arrays
from pretrain.device import training_device
from pretrain.features import FeatureEncoder
from pretrain.loop import fit_epochs, new_state
from pretrain.replica import build_model_and_optimizer, gathered_valid_auc
from pretrain.run_state import METRICS_FILE, STATE_FILE, load_state
from pretrain.stream import FilePlan, shard_windows


def worker_loop(config: dict[str, Any]) -> None:
    """Per-worker body: DDP (``prepare_model``: gloo on CPU, NCCL on GPU), this worker's shard
    of each epoch, gathered validation, a checkpoint per epoch from rank 0, early stopping
    agreed by all ranks (every rank sees the same gathered AUC)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mcfg = ModelConfig.model_validate(config["model"])
    tcfg = TrainConfig.model_validate(config["train"])
    spec = DatasetSpec.model_validate(config["spec"])
    device = training_device(tcfg.use_gpu)
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, config["vocab_sizes"], device)
    if config["init_ref"] is not None:
        with torch.no_grad():
            model.load_warm_start(ray.get(config["init_ref"]))
    state = new_state(model, opt)
    restored = restore_state(config)
    if restored is not None:
        model.load_state_dict(restored["model"])
        opt.load_state_dict(restored["optim"])
        state = {**restored, "resumed_from_epoch": int(restored["epoch"])}
    ddp_model = ray.train.torch.prepare_model(model) if world > 1 else model
    valid_arr = ray.get(config["valid_ref"])
    plan = FilePlan(config["plan"]["files"], config["plan"]["row_groups"])
    fail_after = config["fail_after_epoch"]
    encoder = FeatureEncoder.from_json(config["encoder_json"])
    counter: dict[str, int] = {}

    def windows(epoch: int) -> Iterator[Arrays]:
        counter["rows_read"] = 0
        return shard_windows(plan, encoder, tcfg.shuffle_window, epoch, rank, world, counter)

    def extras(epoch: int) -> dict[str, Any]:
        mine = int(counter.get("rows_read", 0))
        if world > 1:
            import torch.distributed as dist

            got: list[Any] = [None] * world
            dist.all_gather_object(got, mine)
            return {"rows_read_per_worker": [int(g) for g in got]}
        return {"rows_read_per_worker": [mine]}

    def on_epoch_end(st: dict, metrics: dict) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                torch.save(st, Path(d) / STATE_FILE)
                (Path(d) / METRICS_FILE).write_text(json.dumps(metrics))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if fail_after is not None and st["epoch"] >= fail_after:
            raise RuntimeError(f"injected failure after epoch {st['epoch']}")

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return gathered_valid_auc(m, arrays, task, rank, world)

    fit_epochs(
        model,
        ddp_model,
        opt,
        state,
        windows,
        valid_arr,
        list(spec.tasks),
        tcfg,
        valid_auc,
        on_epoch_end,
        rank,
        world,
        device=device,
        epoch_extras=extras,
    )


def restore_state(config: dict[str, Any]) -> dict[str, Any] | None:
    """The epoch state to continue from: Ray Train's own checkpoint (a restarted trial),
    else the resumed run's last epoch state, else None (a fresh start)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / STATE_FILE).is_file():
                return load_state(Path(d) / STATE_FILE)
    if config["resume_path"]:
        return load_state(Path(config["resume_path"]))
    return None
