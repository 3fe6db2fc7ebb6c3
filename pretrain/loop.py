"""The one training core: pretraining (Ray Train workers and the plain single-process loop)
and downstream training (``downstream.train``) run :func:`run_epochs`.

:func:`run_epochs` owns everything that must not differ between them: device placement and
bf16 autocast (``pretrain.device``), gradient clipping, one early-stopping rule
(:func:`should_stop`), best-weights tracking, per-epoch hooks (checkpoint / resume /
report) and progress reporting. Callers supply the batches of an epoch, the loss and the
validation score.

Pretraining's batches come from shuffle windows (:func:`window_batches`): each worker cuts
its shard of the epoch (``pretrain.stream``) into windows, permutes each window with a
(seed, epoch, window, rank)-seeded permutation and slices batches of
``batch_size // world`` rows. Every worker holds the same number of rows, so DDP workers
run the same step count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from pretrain.config import TrainConfig
from pretrain.data import Arrays, num_rows, take
from pretrain.device import autocast, to_device
from pretrain.losses import multitask_loss

Batch = dict[str, torch.Tensor]
MIN_DELTA = 1e-6  # a validation gain smaller than this is no gain


# --- early stopping: one rule ----------------------------------------------------------
def should_stop(bad_epochs: int, patience: int) -> bool:
    """Stop at the ``patience``-th epoch in a row without a validation gain (0 acts as 1).
    The single rule of pretraining and downstream training."""
    return bad_epochs >= max(1, patience)


def new_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Training state at epoch 0 (what an epoch checkpoint stores)."""
    return {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "epoch": 0,
        "best_score": -math.inf,
        "best_state": _cpu_copy(model),
        "best_epoch": 0,
        "bad_epochs": 0,
        "stopped": False,
        "history": [],
        "resumed_from_epoch": 0,
    }


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def update_best(state: dict, score: float, model: torch.nn.Module, epoch: int) -> None:
    """Early-stopping bookkeeping after ``epoch`` (1-based) scored ``score``.

    A gain of more than :data:`MIN_DELTA` keeps the weights and resets the count. A NaN
    score (validation with one class only: no information) keeps the newest weights and
    never counts toward stopping."""
    if math.isnan(score) or score > state["best_score"] + MIN_DELTA:
        if not math.isnan(score):
            state["best_score"] = score
        state["best_state"], state["best_epoch"], state["bad_epochs"] = _cpu_copy(model), epoch, 0
    else:
        state["bad_epochs"] += 1


# --- the loop ------------------------------------------------------------------------------
def train_batches(
    train_model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor],
    device: torch.device,
    amp: str = "off",
    grad_clip: float | None = None,
) -> tuple[float, int, int]:
    """One pass of optimizer steps; returns (mean loss, steps, samples). Batches are moved to
    ``device`` here (the only place); the forward runs under :func:`pretrain.device.autocast`."""
    train_model.train()
    total = torch.zeros((), device=device)
    steps = samples = 0
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, amp):
            logits = train_model(batch)
        loss = loss_fn(logits, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(train_model.parameters(), grad_clip)
        opt.step()
        total += loss.detach().float()  # no per-step host sync on a GPU
        steps += 1
        samples += int(batch["labels"].shape[0])
    return float(total) / max(steps, 1), steps, samples


def run_epochs(
    model: torch.nn.Module,
    train_model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: dict,
    epoch_batches: Callable[[int], Iterable[Batch]],
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor],
    score_fn: Callable[[torch.nn.Module], float],
    *,
    epochs: int,
    patience: int,
    device: torch.device,
    amp: str = "off",
    grad_clip: float | None = None,
    on_epoch_end: Callable[[dict, dict], None] | None = None,
    epoch_extras: Callable[[int], dict[str, float]] | None = None,
    progress_task: str | None = None,
) -> dict:
    """Epochs ``state['epoch'] .. epochs`` with early stopping (:func:`should_stop`).

    ``model`` is the bare module (its state is kept), ``train_model`` what trains (a DDP
    wrapper, or ``model`` itself). ``epoch_batches(epoch)`` yields the epoch's batches (CPU
    tensors) in a fixed order; ``score_fn(model)`` the validation score (higher is better);
    ``on_epoch_end(state, metrics)`` persists/reports; ``epoch_extras(epoch)`` adds metrics
    (e.g. rows read). ``progress_task`` reports each epoch to ``engines.progress``.
    Returns ``state`` (``best_state`` on the CPU, ``history`` of per-epoch metrics)."""
    from engines.progress import report_progress

    for epoch in range(int(state["epoch"]), epochs):
        if state["stopped"]:
            break
        t0 = time.perf_counter()
        loss, steps, samples = train_batches(train_model, opt, epoch_batches(epoch), loss_fn, device, amp, grad_clip)
        seconds = time.perf_counter() - t0
        score = float(score_fn(model))
        update_best(state, score, model, epoch + 1)
        state["stopped"] = should_stop(state["bad_epochs"], patience)
        state["epoch"] = epoch + 1
        state["model"], state["optim"] = model.state_dict(), opt.state_dict()
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss,
            "valid_auc": score,
            "samples": float(samples),
            "steps": steps,
            "seconds": seconds,
        }
        if epoch_extras is not None:
            metrics.update(epoch_extras(epoch))
        state["history"] = [*state["history"], metrics]
        if progress_task:
            report_progress(progress_task, epoch + 1, epochs, loss=round(loss, 5), valid_auc=round(score, 5))
        if on_epoch_end is not None:
            on_epoch_end(state, metrics)
    return state


# --- pretraining's batches -----------------------------------------------------------------
def window_order(n: int, seed: int, epoch: int, window: int, rank: int = 0) -> np.ndarray:
    """Row order inside shuffle window ``window`` (``n`` rows) of ``epoch`` on worker ``rank``:
    a permutation seeded by (seed, epoch, window, rank) only, so a resumed run replays
    exactly the epochs an uninterrupted run would."""
    return np.random.default_rng([seed, epoch, window, rank]).permutation(n)


def array_windows(arrays: Arrays, window_rows: int) -> Iterator[Arrays]:
    """Consecutive windows of ``window_rows`` rows (the last one shorter): what
    ``pretrain.stream.shard_windows`` yields for one worker over the same rows."""
    n = num_rows(arrays)
    for start in range(0, n, window_rows):
        yield {k: v[start : start + window_rows] for k, v in arrays.items()}


def window_batches(windows: Iterable[Arrays], seed: int, epoch: int, batch_rows: int, rank: int = 0) -> Iterator[Batch]:
    """Batches of ``batch_rows`` rows from each window's seeded permutation."""
    for w, arrays in enumerate(windows):
        order = window_order(num_rows(arrays), seed, epoch, w, rank)
        for start in range(0, len(order), batch_rows):
            yield take(arrays, order[start : start + batch_rows])


def pretrain_loss(tasks: list[str], tcfg: TrainConfig) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    """The masked multi-task loss of pretraining (combined-pair where ``pairwise_alpha`` says)."""

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return multitask_loss(
            logits, batch["labels"], batch["label_mask"], tasks, tcfg.pairwise_alpha, tcfg.task_weights
        )[0]

    return loss_fn


def fit_epochs(
    model: torch.nn.Module,
    train_model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: dict,
    train_windows: Callable[[int], Iterable[Arrays]],
    valid_arr: Arrays,
    tasks: list[str],
    tcfg: TrainConfig,
    valid_auc: Callable[[torch.nn.Module, Arrays, int], float],
    on_epoch_end: Callable[[dict, dict], None],
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
    epoch_extras: Callable[[int], dict[str, float]] | None = None,
    progress_task: str | None = None,
) -> dict:
    """Pretraining on :func:`run_epochs`: ``train_windows(epoch)`` yields this worker's shuffle
    windows; ``valid_auc(model, arrays, task)`` scores validation (gathered across workers)
    on ``train.early_stop_task`` (default: the first task). ``samples`` in the metrics
    counts all workers."""
    stop_task = tasks.index(tcfg.early_stop_task) if tcfg.early_stop_task else 0
    bs = max(1, tcfg.batch_size // world)

    def on_end(st: dict, metrics: dict) -> None:
        metrics["samples"] = metrics["samples"] * world  # the dict in st["history"]: all workers' samples
        on_epoch_end(st, metrics)

    return run_epochs(
        model,
        train_model,
        opt,
        state,
        lambda epoch: window_batches(train_windows(epoch), tcfg.seed, epoch, bs, rank),
        pretrain_loss(tasks, tcfg),
        lambda m: valid_auc(m, valid_arr, stop_task),
        epochs=tcfg.epochs,
        patience=tcfg.patience,
        device=device or torch.device("cpu"),
        amp=tcfg.amp,
        grad_clip=tcfg.grad_clip,
        on_epoch_end=on_end,
        epoch_extras=epoch_extras,
        progress_task=progress_task,
    )


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
