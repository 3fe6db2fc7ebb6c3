"""The query tower's loss: sampled softmax with the logQ correction.

Sampled softmax over in-batch negatives (every other positive item of the batch) plus
optionally ``R`` uniformly drawn catalogue items, with the logQ correction of Yi et al.
(RecSys 2019): each logit ``s_bj = <q_b, v_j> / T`` is reduced by ``log Q(j)``, the
log-probability that ``j`` enters the batch as a candidate (in-batch: the item's share
``p_j`` of the training positives; random: ``1 / N``). Without it popular items, which
appear as in-batch negatives far more often, are pushed down too hard. Other rows whose
item equals row b's own positive are masked (they are not negatives of b). ``logq`` may
be a weight in [0, 1] (partial correction).
"""

from __future__ import annotations

import torch
from torch import nn


def sampled_softmax_loss(
    q: torch.Tensor,
    pos_items: torch.Tensor,
    item_vecs: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float = 1.0,
    rand_items: torch.Tensor | None = None,
    rand_vecs: torch.Tensor | None = None,
    rand_log_q: float | None = None,
) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy of each row's own positive.

    q [B, d] queries; pos_items [B] item ids of the positives; item_vecs [B, d] their
    vectors; log_q [B] log sampling probability of each in-batch item (None = no
    correction); rand_items [R] / rand_vecs [R, d]: extra uniform negatives with log
    probability ``rand_log_q`` (a random item equal to row b's positive is masked for b).
    """
    logits = q @ item_vecs.T / temperature  # [B, B]
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = pos_items[:, None] == pos_items[None, :]
    eye = torch.eye(len(pos_items), dtype=torch.bool, device=q.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if rand_vecs is not None and len(rand_vecs):
        r = q @ rand_vecs.T / temperature
        if log_q is not None and rand_log_q is not None:
            r = r - rand_log_q
        r = r.masked_fill(pos_items[:, None] == rand_items[None, :], float("-inf"))
        logits = torch.cat([logits, r], dim=1)
    target = torch.arange(len(pos_items), device=q.device)
    return nn.functional.cross_entropy(logits, target)
