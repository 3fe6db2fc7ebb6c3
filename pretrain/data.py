"""Encoded arrays <-> mini-batches, and batched inference over an encoded set."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

Arrays = dict[str, np.ndarray]


def to_arrays(batch: dict[str, torch.Tensor]) -> Arrays:
    """Encoder output -> numpy (cheap to put in Ray's object store and to slice)."""
    return {k: v.numpy() for k, v in batch.items()}


def num_rows(arrays: Arrays) -> int:
    return len(next(iter(arrays.values())))


def take(arrays: Arrays, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of every array as tensors (fancy indexing copies, so read-only
    object-store arrays are fine)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in arrays.items()}


def iter_batches(arrays: Arrays, batch_size: int, order: np.ndarray | None = None) -> Iterator[dict[str, torch.Tensor]]:
    idx = np.arange(num_rows(arrays)) if order is None else order
    for start in range(0, len(idx), batch_size):
        yield take(arrays, idx[start : start + batch_size])


@torch.no_grad()
def predict_logits(model: torch.nn.Module, arrays: Arrays, batch_size: int = 4096) -> np.ndarray:
    """Logits [N, T] for every row, in order (batches go to the model's device)."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    out = [
        model({k: v.to(device) for k, v in b.items()}).float().cpu().numpy() for b in iter_batches(arrays, batch_size)
    ]
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)
