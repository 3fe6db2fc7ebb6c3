"""One training replica: what every Ray Train worker and the plain in-process loop build
and score identically, and the plain loop itself (one worker's view, without Ray).

Shapes: ``Arrays`` are ``pretrain.data``'s column arrays (N rows); ``labels`` and
``label_mask`` are [N, T] for T tasks, logits [N, T].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from contracts import DatasetSpec
from pretrain.config import ModelConfig, TrainConfig
from pretrain.data import Arrays, num_rows, predict_logits
from pretrain.device import check_device_config, seed_everything, training_device
from pretrain.loop import array_windows, fit_epochs, make_optimizer, new_state
from pretrain.metrics import auc
from pretrain.model import FoundationModel


def build_model_and_optimizer(
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    spec: DatasetSpec,
    vocab_sizes: dict[str, int],
    device: torch.device | None = None,
) -> tuple[FoundationModel, torch.optim.Optimizer]:
    """Seeded construction, identical in every worker and in the plain loop."""
    seed_everything(tcfg.seed, tcfg.torch_threads or max(1, int(tcfg.cpus_per_worker)), tcfg.deterministic)
    model = FoundationModel(mcfg, spec, vocab_sizes)
    if device is not None:
        model.to(device)
    return model, make_optimizer(model, tcfg)


def gathered_valid_auc(model: FoundationModel, valid: Arrays, task: int, rank: int, world: int) -> float:
    """AUC of ``task`` over all validation rows; each rank scores its slice, then gather."""
    n = num_rows(valid)
    rows = np.arange(rank, n, world)
    part = {k: v[rows] for k, v in valid.items()}
    logits = predict_logits(model, part)
    labels, mask = part["labels"][:, task], part["label_mask"][:, task]
    pair = (labels[mask], logits[mask, task] if logits.size else np.zeros(0))
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, pair)
        y = np.concatenate([g[0] for g in gathered])
        s = np.concatenate([g[1] for g in gathered])
    else:
        y, s = pair
    return auc(y, s)


def fit_plain(
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    spec: DatasetSpec,
    vocab_sizes: dict[str, int],
    train_arr: Arrays,
    valid_arr: Arrays,
    init_state: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The same training in this process, without Ray (reference for tests and benchmarks):
    one worker's view of the same rows in stream order."""
    check_device_config(tcfg.use_gpu, tcfg.amp)
    device = training_device(tcfg.use_gpu)
    model, opt = build_model_and_optimizer(mcfg, tcfg, spec, vocab_sizes, device)
    if init_state is not None:
        with torch.no_grad():
            model.load_warm_start(init_state)
    state = new_state(model, opt)

    def valid_auc(m: torch.nn.Module, arrays: Arrays, task: int) -> float:
        return gathered_valid_auc(m, arrays, task, 0, 1)

    def windows(epoch: int) -> Iterator[Arrays]:
        return array_windows(train_arr, tcfg.shuffle_window)

    n = num_rows(train_arr)
    return fit_epochs(
        model,
        model,
        opt,
        state,
        windows,
        valid_arr,
        list(spec.tasks),
        tcfg,
        valid_auc,
        lambda st, metrics: None,
        device=device,
        epoch_extras=lambda epoch: {"rows_read_per_worker": [n]},
        progress_task="pretrain.epoch",
    )
