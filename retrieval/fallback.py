"""What the canonical log says up to the served day: item popularity and each user's engaged items.

The retrieval service uses it twice:

- **popularity fallback**: a user id the user table does not know is answered with the
  index's items ranked by their number of positive rows (label 1 on the log's first task,
  or a named one) on the log's days up to and including the served ``ds`` (the day the
  live index was built from, so nothing later leaks in); ties are broken by item id;
- **exclude seen**: the items a user already interacted with (any row) on those days,
  left out of the answer on request (the query tower's quality is measured the same way).

Only items that are in the index count: the answer can only name items the index holds.
Memory: one int per distinct (user, item) pair kept (``engaged``), read once per served ``ds`` (and when
the log gets a new Delta version), always in the service's background watcher, never on
the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datasources import log_days, read_log, read_log_spec
from engines import delta_io


@dataclass(frozen=True)
class LogHistory:
    """Positives on the log's days ``<= ds``, in index rows.

    popular_rows: (m,) int64 index rows of items with >= 1 positive, most positives first;
    popular_counts: (m,) int64 their positive counts; engaged: user id -> sorted unique
    (n_u,) int64 index rows of the items that user had a positive with.
    """

    log_path: str
    ds: str
    log_version: int | None
    days: int
    positive_rows: int
    popular_rows: np.ndarray = field(repr=False)
    popular_counts: np.ndarray = field(repr=False)
    engaged: dict[str, np.ndarray] = field(repr=False)

    def popular(self, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` popular index rows and their counts, without the rows in ``exclude``."""
        rows, counts = self.popular_rows, self.popular_counts
        if exclude is not None and exclude.size:
            keep = ~np.isin(rows, exclude)
            rows, counts = rows[keep], counts[keep]
        return rows[:k], counts[:k]

    def seen(self, user_id: str) -> np.ndarray:
        return self.engaged.get(user_id, _EMPTY)


_EMPTY = np.zeros(0, np.int64)


def empty_history(ds: str) -> LogHistory:
    """No log (or no day up to ``ds``): no fallback, nothing to exclude."""
    return LogHistory("", ds, None, 0, 0, _EMPTY, _EMPTY, {})


def positive_task_name(log_path: str | Path, task: str | None) -> str:
    """The task whose label 1 makes a row positive: ``task``, or the log's first task (as
    the manifest's hit-rate and the query tower's quality measure count positives)."""
    tasks = read_log_spec(log_path).tasks
    if task is None:
        return tasks[0]
    if task not in tasks:
        raise ValueError(f"{log_path}: positive task {task!r} is not a task of the log ({tasks})")
    return task


def load_history(log_path: str | Path, ds: str, item_ids: np.ndarray, task: str | None = None) -> LogHistory:
    """Read the log's days ``<= ds`` and map their items to rows of ``item_ids``.

    item_ids: (n,) object array of str, the index's row -> item id map. Popularity counts
    rows positive on ``task``; engaged items are every item a user has a row with (an
    interaction, as the query tower's exclude_seen counts them).
    Raises ValueError for a log that is not an lfm4ads log or an unknown ``task``.
    """
    path = str(log_path)
    if not delta_io.exists(path):
        return empty_history(ds)
    task = positive_task_name(path, task)
    version = delta_io.open_table(path).version()
    days = [d for d in log_days(path) if d <= ds]
    if not days:
        return LogHistory(path, ds, version, 0, 0, _EMPTY, _EMPTY, {})
    t = read_log(path, days, columns=["user_id", "item_id", task])
    row = pc.index_in(t["item_id"], value_set=pa.array(item_ids.tolist(), pa.string()))
    positive = pc.fill_null(pc.equal(t[task], 1.0), False)  # a null label means "task absent"
    t = pa.table({"user_id": t["user_id"], "row": row, "positive": positive}).filter(pc.is_valid(row))
    pos_rows = t.filter(t["positive"])["row"].to_numpy().astype(np.int64)
    counts = np.bincount(pos_rows, minlength=len(item_ids))
    order = np.argsort(item_ids, kind="stable")  # ties: by item id
    order = order[np.argsort(-counts[order], kind="stable")]
    order = order[counts[order] > 0]
    engaged: dict[str, np.ndarray] = {}
    if t.num_rows:
        grouped = t.group_by("user_id").aggregate([("row", "distinct")])
        for user, items in zip(grouped["user_id"].to_pylist(), grouped["row_distinct"].to_pylist()):
            engaged[user] = np.asarray(sorted(items), np.int64)
    return LogHistory(
        path,
        ds,
        version,
        len(days),
        int(pos_rows.size),
        order.astype(np.int64),
        counts[order].astype(np.int64),
        engaged,
    )


def log_version(log_path: str | Path) -> int | None:
    """The log's Delta version (None when there is no log): the watcher reloads on a change."""
    try:
        return delta_io.open_table(log_path).version()
    except FileNotFoundError:
        return None
