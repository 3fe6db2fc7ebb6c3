"""Multi-task losses with label masking (papers.md section 6 for the pairwise term).

Shapes: logits, labels [B, T] float; mask [B, T] bool (False = task absent for the row,
never treated as a negative).

The one loss module of the project: pretraining (``pretrain.loop``) and downstream training
(``downstream.train``) both call :func:`multitask_loss`. Every term is finite on any batch:
no present rows -> 0, no positive (or no negative) -> pairwise term 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] logits/labels/mask -> mean BCE over masked rows (0 when none, still in the graph)."""
    m = mask.to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per * m).sum() / m.sum().clamp_min(1.0)


def pairwise_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] -> ``-mean_{i pos, j neg} log sigmoid(z_i - z_j)``; 0 (finite) without a pair."""
    valid = mask.bool()
    pos = valid & (labels > 0.5)
    neg = valid & (labels <= 0.5)
    if not bool(pos.any()) or not bool(neg.any()):
        return logits.sum() * 0.0  # keeps the graph (DDP needs every parameter to get a grad)
    diff = logits[pos].unsqueeze(1) - logits[neg].unsqueeze(0)  # [P, N]
    return F.softplus(-diff).mean()  # softplus(-d) == -log sigmoid(d), stable


def combined_pair_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * BCE + (1 - alpha) * pairwise`` for one task ([B] tensors)."""
    return alpha * masked_bce(logits, labels, mask) + (1.0 - alpha) * pairwise_loss(logits, labels, mask)


def multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    tasks: list[str],
    pairwise_alpha: dict[str, float] | None = None,
    task_weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """[B, T] -> (weighted sum over tasks, per-task loss values for logging).

    A task listed in ``pairwise_alpha`` uses the combined-pair loss, others plain BCE.
    """
    if logits.shape != labels.shape or labels.shape != mask.shape or logits.shape[1] != len(tasks):
        raise ValueError(
            f"shapes differ: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
            f"mask {tuple(mask.shape)}, tasks {tasks}"
        )
    pairwise_alpha = pairwise_alpha or {}
    task_weights = task_weights or {}
    logits, labels = logits.float(), labels.float()  # bf16 autocast output: the loss stays in float32
    total = logits.new_zeros(())
    parts: dict[str, float] = {}
    for t, task in enumerate(tasks):
        z, y, m = logits[:, t], labels[:, t], mask[:, t]
        if task in pairwise_alpha:
            loss = combined_pair_loss(z, y, m, pairwise_alpha[task])
        else:
            loss = masked_bce(z, y, m)
        total = total + task_weights.get(task, 1.0) * loss
        parts[task] = float(loss.detach())
    return total, parts
