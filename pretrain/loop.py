"""The training step shared by the Ray Train worker loop and the plain single-process loop
(benchmarks.train compares the two on exactly this code)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from pretrain.config import TrainConfig
from pretrain.data import Arrays, num_rows, take
from pretrain.losses import multitask_loss


def window_order(n: int, seed: int, epoch: int, window: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This worker's row order inside shuffle window ``window`` (``n`` rows) of ``epoch``: one
    seeded permutation of the window shared by all workers, dealt round-robin, cut to equal
    length so every DDP worker runs the same step count. Depends only on (seed, epoch,
    window): a resumed run replays exactly the epochs an uninterrupted run would."""
    perm = np.random.default_rng([seed, epoch, window]).permutation(n)
    per_worker = n // world if world > 1 else n
    return perm[rank::world][:per_worker]


def array_windows(arrays: Arrays, window_rows: int) -> Iterator[Arrays]:
    """Consecutive windows of ``window_rows`` rows (the last one shorter): what a Ray Data
    stream of the same rows yields with ``iter_batches(batch_size=window_rows)``."""
    n = num_rows(arrays)
    for start in range(0, n, window_rows):
        yield {k: v[start : start + window_rows] for k, v in arrays.items()}


def train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    windows: Iterable[Arrays],
    tasks: list[str],
    tcfg: TrainConfig,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """One pass over the stream of shuffle windows (every worker sees every window and
    trains on its round-robin share); returns mean loss, samples and seconds. Time spent
    waiting for the next window counts as training time (data loading is part of it)."""
    model.train()
    bs = max(1, tcfg.batch_size // world)
    t0 = time.perf_counter()
    total, steps, samples = 0.0, 0, 0
    for w, arrays in enumerate(windows):
        order = window_order(num_rows(arrays), tcfg.seed, epoch, w, rank, world)
        samples += len(order)
        for start in range(0, len(order), bs):
            batch = take(arrays, order[start : start + bs])
            logits = model(batch)
            loss, _ = multitask_loss(
                logits, batch["labels"], batch["label_mask"], tasks, tcfg.pairwise_alpha, tcfg.task_weights
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
    return {"loss": total / max(steps, 1), "samples": float(samples), "seconds": time.perf_counter() - t0}


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)


def new_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Training state at epoch 0 (what an epoch checkpoint stores)."""
    return {"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 0, "best_score": -math.inf,
            "best_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "bad_epochs": 0, "stopped": False, "history": [], "resumed_from_epoch": 0}


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
) -> dict:
    """Epochs ``state['epoch'] .. tcfg.epochs`` with early stopping on validation AUC.

    ``model`` is the bare module (its state is saved), ``train_model`` what trains (the DDP
    wrapper under Ray Train, the same module in a plain loop). ``train_windows(epoch)``
    yields the epoch's shuffle windows in a fixed order (a Ray Data stream or
    :func:`array_windows`). ``valid_auc(model, arrays,
    task)`` scores validation (gathered across workers), ``on_epoch_end(state, metrics)``
    persists/reports. A NaN AUC (one class only) counts as an improvement, never a stop.
    """
    stop_task = tasks.index(tcfg.early_stop_task) if tcfg.early_stop_task else 0
    for epoch in range(int(state["epoch"]), tcfg.epochs):
        if state["stopped"]:
            break
        stats = train_epoch(train_model, opt, train_windows(epoch), tasks, tcfg, epoch, rank, world)
        score = valid_auc(model, valid_arr, stop_task)
        if math.isnan(score) or score > state["best_score"] + 1e-6:
            if not math.isnan(score):
                state["best_score"] = score
            state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        state["stopped"] = state["bad_epochs"] > tcfg.patience
        state["epoch"] = epoch + 1
        state["model"], state["optim"] = model.state_dict(), opt.state_dict()
        metrics = {"epoch": epoch + 1, "train_loss": stats["loss"], "valid_auc": score,
                   "samples": stats["samples"] * world, "seconds": stats["seconds"]}
        state["history"] = [*state["history"], metrics]
        on_epoch_end(state, metrics)
    return state
