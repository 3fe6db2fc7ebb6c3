"""Plain PyTorch training of one downstream model, early-stopped on validation AUC.

Every model here maps the batch dict (:mod:`downstream.data`) to logits [B, T]; the
loss is BCE over the tasks present in each row (``label_mask``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from downstream.data import Split
from pretrain import auc


@dataclass
class FitResult:
    """Outcome of one training run (one model, one seed)."""

    valid_auc: float
    test_auc: dict[str, float]
    epochs: int
    best_epoch: int
    history: list[float] = field(default_factory=list)  # validation AUC per epoch


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over present (row, task) pairs; 0 (not NaN) when none is present."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    m = mask.float()
    return (loss * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 4096) -> np.ndarray:
    """Probabilities [N, T]."""
    model.eval()
    out = []
    for start in range(0, split.num_rows, batch_size):
        idx = torch.arange(start, min(start + batch_size, split.num_rows))
        out.append(torch.sigmoid(model(split.take(idx))))
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
) -> tuple[nn.Module, FitResult]:
    """Train ``build()`` with Adam; keep the weights of the best validation epoch."""
    torch.manual_seed(seed)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, history, stale = -math.inf, None, 0, [], 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(train.num_rows, generator=gen)
        for start in range(0, train.num_rows, batch_size):
            b = train.take(perm[start : start + batch_size])
            loss = masked_bce(model(b), b["labels"], b["label_mask"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score = selection_auc(task_aucs(model, valid, tasks))
        history.append(score)
        if score > best or best_state is None:
            best, best_state, best_epoch, stale = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model, FitResult(best, task_aucs(model, test, tasks), epoch, best_epoch, history)
