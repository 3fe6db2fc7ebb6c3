"""Training of one downstream model, early-stopped on validation AUC, on the project's
one training core (``pretrain.loop.run_epochs``) and loss module (``pretrain.losses``).

Every model here maps the batch dict (:mod:`downstream.data`) to logits [B, T]; the
loss is the masked multi-task loss over the tasks present in each row (``label_mask``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from downstream.data import ScenarioData, Split
from pretrain import auc
from pretrain.device import check_device_config, seed_everything, training_device
from pretrain.loop import new_state, run_epochs
from pretrain.losses import masked_bce, multitask_loss

__all__ = ["FitResult", "fit", "masked_bce", "predict", "selection_auc", "task_aucs", "train_options"]


@dataclass
class FitResult:
    """Outcome of one training run (one model, one seed)."""

    valid_auc: float
    test_auc: dict[str, float]
    epochs: int
    best_epoch: int
    history: list[float] = field(default_factory=list)  # validation AUC per epoch
    # where the fit's wall seconds went: build (model construction), train (optimizer steps,
    # all epochs), valid (the per-epoch validation AUC), test (the final test AUC)
    seconds: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 4096) -> np.ndarray:
    """Probabilities [N, T]."""
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    for start in range(0, split.num_rows, batch_size):
        idx = torch.arange(start, min(start + batch_size, split.num_rows))
        batch = {k: v.to(device) for k, v in split.take(idx).items()}
        out.append(torch.sigmoid(model(batch).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def task_aucs(model: nn.Module, split: Split, tasks: list[str]) -> dict[str, float]:
    """Test AUC per task over rows where the task is present (NaN if one class only)."""
    p = predict(model, split)
    y, m = split.batch["labels"].numpy(), split.batch["label_mask"].numpy()
    return {t: auc(y[m[:, k], k], p[m[:, k], k]) for k, t in enumerate(tasks)}


def selection_auc(aucs: dict[str, float]) -> float:
    """The early-stopping metric: the first task (click) with a defined AUC."""
    for v in aucs.values():
        if not math.isnan(v):
            return v
    return float("nan")


def fit(
    build: Callable[[], nn.Module],
    train: Split,
    valid: Split,
    test: Split,
    tasks: list[str],
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int,
    weight_decay: float = 0.0,
    pairwise_alpha: dict[str, float] | None = None,
    grad_clip: float | None = None,
    use_gpu: bool = False,
    amp: str = "off",
) -> tuple[nn.Module, FitResult]:
    """Train ``build()`` with Adam on the project's one training core
    (``pretrain.loop.run_epochs``: device, AMP, clipping, the shared early-stopping rule);
    keep the weights of the best validation epoch.

    Loss: ``pretrain.losses.multitask_loss`` (masked BCE per task; the combined-pair loss
    ``alpha*BCE + (1-alpha)*L_pair`` for the tasks in ``pairwise_alpha``)."""
    check_device_config(use_gpu, amp, key="downstream")
    device = training_device(use_gpu)
    seed_everything(seed)  # threads are the caller's (downstream.evaluate.torch_threads)
    t0 = time.perf_counter()
    model = build().to(device)
    build_s = time.perf_counter() - t0
    valid_s = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    unknown = [t for t in (pairwise_alpha or {}) if t not in tasks]
    if unknown:
        raise ValueError(f"pairwise_alpha: unknown task(s) {unknown}; the tasks are {tasks}")

    def batches(epoch: int):
        perm = torch.randperm(train.num_rows, generator=gen)
        for start in range(0, train.num_rows, batch_size):
            yield train.take(perm[start : start + batch_size])

    def loss_fn(logits: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return multitask_loss(logits, b["labels"], b["label_mask"], tasks, pairwise_alpha)[0]

    def score(m: nn.Module) -> float:
        nonlocal valid_s
        t = time.perf_counter()
        try:
            return selection_auc(task_aucs(m, valid, tasks))
        finally:
            valid_s += time.perf_counter() - t

    state = run_epochs(
        model,
        model,
        opt,
        new_state(model, opt),
        batches,
        loss_fn,
        score,
        epochs=epochs,
        patience=patience,
        device=device,
        amp=amp,
        grad_clip=grad_clip,
        progress_task="downstream.epoch",
    )
    model.load_state_dict(state["best_state"])
    best = float(state["best_score"]) if math.isfinite(state["best_score"]) else float("nan")
    history = [float(h["valid_auc"]) for h in state["history"]]
    t0 = time.perf_counter()
    test_auc = task_aucs(model, test, tasks)
    seconds = {
        "build": build_s,
        "train": float(sum(h["seconds"] for h in state["history"])),
        "valid": valid_s,
        "test": time.perf_counter() - t0,
    }
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    return model, FitResult(best, test_auc, int(state["epoch"]), int(state["best_epoch"]), history, seconds)


def train_options(cfg) -> dict:
    """The loss / device keyword arguments of :func:`fit` from a ``DownstreamConfig``
    (``fit(..., **train_options(cfg))``)."""
    return {
        "pairwise_alpha": dict(cfg.pairwise_alpha),
        "grad_clip": cfg.grad_clip,
        "use_gpu": cfg.use_gpu,
        "amp": cfg.amp,
    }


def fit_scenario(build: Callable[[], nn.Module], data: ScenarioData, cfg, seed: int) -> tuple[nn.Module, FitResult]:
    """:func:`fit` on one scenario's splits with every training option from ``cfg`` (a
    ``DownstreamConfig``: budget, learning rate, early stopping, loss, device)."""
    return fit(
        build,
        data.train,
        data.valid,
        data.test,
        data.tasks,
        seed=seed,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        weight_decay=cfg.weight_decay,
        **train_options(cfg),
    )
