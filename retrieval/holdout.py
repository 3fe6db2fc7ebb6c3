"""Held-out future interactions from the canonical log, for hit-rate@K."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc

from datasources import log_days, read_log, read_log_spec


def future_positives(log_path: str | Path, ds: str, days: int, task: str | None = None) -> dict[str, list[str]]:
    """user id -> items with a positive ``task`` label in the ``days`` log days after ``ds``.

    Empty when the log has no day after ``ds``. Raises ValueError for an unknown task.
    """
    spec = read_log_spec(log_path)
    task = task or spec.tasks[0]
    if task not in spec.tasks:
        raise ValueError(f"{log_path}: hit_rate_task {task!r} is not a task of the log ({spec.tasks})")
    later = [d for d in log_days(log_path) if d > ds][:days]
    if not later:
        return {}
    t = read_log(log_path, later, columns=["user_id", "item_id", task])
    t = t.filter(pc.equal(t[task], 1.0))
    out: dict[str, list[str]] = defaultdict(list)
    for u, i in zip(t["user_id"].to_pylist(), t["item_id"].to_pylist()):
        out[u].append(i)
    return dict(out)
