"""The epoch checkpoints of one Ray Train run: what rank 0 writes each epoch and how the
driver (and a restarted worker) finds the newest one.

A run folder ``<checkpoint_root>/.runs/<run_key>/`` holds Ray Train's ``checkpoint_*/``
folders; each has ``state.pt`` (model, optimizer, best weights, early-stopping state,
``epoch``; see ``pretrain.loop.new_state``) and ``metrics.json`` (that epoch's metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"


def load_state(path: Path) -> dict[str, Any]:
    """One epoch state (tensors on CPU)."""
    return torch.load(path, weights_only=True, map_location="cpu")


def last_epoch_state(run_dir: Path) -> Path | None:
    """The epoch state with the highest epoch under a Ray Train run folder."""
    best: tuple[int, Path] | None = None
    if not run_dir.is_dir():
        return None
    for f in run_dir.glob(f"checkpoint_*/{STATE_FILE}"):
        try:
            epoch = int(load_state(f)["epoch"])
        except Exception:
            continue  # a partly persisted checkpoint: ignore it
        if best is None or epoch > best[0]:
            best = (epoch, f)
    return best[1] if best else None
