"""Representation health: the numbers a publishing gate looks at before trusting a run.

Per vector column: rows, rows with NaN/inf, L2-norm statistics and the effective rank
(papers.md section 2) of a row sample; per entity: coverage of the log's users/items.

The extraction actor accumulates the per-column numbers of each shard while the vectors
are still in memory (:class:`VectorAccumulator`) and leaves them in
``_stats/<shard>.json``; the driver merges them (:func:`samples_health`) and reads back
only the id columns and the first ``ERANK_ROWS`` rows, instead of every vector again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extract.vectors import to_numpy

ERANK_ROWS = 4096
STATS_DIR = "_stats"


def _matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed/variable list<float> [N] -> float64 [N, d]."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros((0, 0))
    return to_numpy(arr, dtype=np.float64)


def vector_stats(x: np.ndarray) -> dict:
    """[N, d] -> rows, nan_inf_rows, norm stats, effective rank of (up to ERANK_ROWS) finite rows."""
    from pretrain.metrics import effective_rank

    finite = np.isfinite(x).all(axis=1) if x.size else np.ones(len(x), bool)
    good = x[finite]
    norms = np.linalg.norm(good, axis=1) if good.size else np.zeros(0)
    sample = good[np.linspace(0, len(good) - 1, min(len(good), ERANK_ROWS)).astype(int)] if len(good) else good
    return {
        "rows": int(len(x)),
        "dim": int(x.shape[1]) if x.ndim == 2 and len(x) else 0,
        "nan_inf_rows": int((~finite).sum()),
        "norm_mean": float(norms.mean()) if len(norms) else float("nan"),
        "norm_std": float(norms.std()) if len(norms) else float("nan"),
        "norm_min": float(norms.min()) if len(norms) else float("nan"),
        "norm_max": float(norms.max()) if len(norms) else float("nan"),
        "zero_rows": int((norms == 0).sum()),
        "effective_rank": float(effective_rank(sample)) if len(sample) > 1 else float("nan"),
    }


class VectorAccumulator:
    """Mergeable per-column sums: rows, NaN/inf rows, finite rows, sum and sum of squares of
    the L2 norms (float64), min/max norm, all-zero rows."""

    FIELDS = ("rows", "nan_inf_rows", "n", "s1", "s2", "min", "max", "zero")

    def __init__(self, state: dict | None = None):
        self.s = {"rows": 0, "nan_inf_rows": 0, "n": 0, "s1": 0.0, "s2": 0.0, "min": np.inf, "max": -np.inf, "zero": 0}
        if state:
            self.s.update({k: state[k] for k in self.FIELDS})

    def update(self, x: np.ndarray) -> None:
        """x [B, d] (float32 or float64)."""
        s = self.s
        finite = np.isfinite(x).all(axis=1)
        good = x[finite].astype(np.float64, copy=False)
        sq = np.einsum("ij,ij->i", good, good)
        norms = np.sqrt(sq)
        s["rows"] += len(x)
        s["nan_inf_rows"] += int(len(x) - len(good))
        s["n"] += len(norms)
        s["s1"] += float(norms.sum())
        s["s2"] += float(sq.sum())
        s["zero"] += int((sq == 0).sum())
        if len(norms):
            s["min"], s["max"] = min(s["min"], float(norms.min())), max(s["max"], float(norms.max()))

    def merge(self, other: "VectorAccumulator") -> None:
        a, b = self.s, other.s
        for k in ("rows", "nan_inf_rows", "n", "s1", "s2", "zero"):
            a[k] += b[k]
        a["min"], a["max"] = min(a["min"], b["min"]), max(a["max"], b["max"])

    def state(self) -> dict:
        # JSON has no inf: an empty accumulator stores None
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.s.items()}

    @classmethod
    def from_state(cls, state: dict) -> "VectorAccumulator":
        st = dict(state)
        st["min"] = np.inf if st["min"] is None else st["min"]
        st["max"] = -np.inf if st["max"] is None else st["max"]
        return cls(st)

    def summary(self, dim: int) -> dict:
        s = self.s
        mean = s["s1"] / s["n"] if s["n"] else float("nan")
        return {
            "dim": dim,
            "rows": s["rows"],
            "nan_inf_rows": s["nan_inf_rows"],
            "zero_rows": s["zero"],
            "norm_mean": mean,
            "norm_std": float(np.sqrt(max(s["s2"] / s["n"] - mean**2, 0.0))) if s["n"] else float("nan"),
            "norm_min": s["min"] if s["n"] else float("nan"),
            "norm_max": s["max"] if s["n"] else float("nan"),
        }


def write_shard_stats(folder: Path, shard: str, accs: dict[str, VectorAccumulator]) -> None:
    """``folder/_stats/<shard>.json`` (written before the shard is renamed into place)."""
    d = Path(folder) / STATS_DIR
    d.mkdir(exist_ok=True)
    tmp = d / f".{shard}.json.tmp"
    tmp.write_text(json.dumps({c: a.state() for c, a in accs.items()}))
    tmp.replace(d / f"{shard}.json")


def _shard_accumulators(path: Path, cols: list[str]) -> dict[str, VectorAccumulator]:
    """The same sums recomputed from a shard (a shard without a stats file)."""
    accs = {c: VectorAccumulator() for c in cols}
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=cols):
        for c in cols:
            accs[c].update(_matrix(batch.column(c)))
    return accs


def samples_health(
    samples_dir: str | Path, dims: dict[str, int], log_rows: int, shards: list[str] | None = None
) -> dict:
    """Health of one extracted day (``dims``: vector column -> dim; ``shards``: in input
    order, default every ``part-*.parquet``).

    Norm statistics come from the shards' ``_stats/`` files (recomputed for a shard
    without one); distinct users/items from the id columns; the effective rank of each
    column from its first ``ERANK_ROWS`` finite rows in shard order.
    """
    from pretrain.metrics import effective_rank

    folder = Path(samples_dir)
    shards = shards if shards is not None else sorted(f.name for f in folder.glob("part-*.parquet"))
    cols = list(dims)
    total = {c: VectorAccumulator() for c in cols}
    users, items = [], []
    samples: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    need = {c: ERANK_ROWS for c in cols}
    for shard in shards:
        path = folder / shard
        stats = folder / STATS_DIR / f"{shard}.json"
        if stats.is_file():
            saved = json.loads(stats.read_text())
            accs = {c: VectorAccumulator.from_state(saved[c]) for c in cols}
        else:
            accs = _shard_accumulators(path, cols)
        for c in cols:
            total[c].merge(accs[c])
        ids = pq.read_table(path, columns=["user_id", "item_id"])
        users.append(pc.unique(ids["user_id"].combine_chunks()))
        items.append(pc.unique(ids["item_id"].combine_chunks()))
        if any(need.values()):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=ERANK_ROWS, columns=cols):
                for c in cols:
                    if need[c] > 0:
                        x = _matrix(batch.column(c))
                        x = x[np.isfinite(x).all(axis=1)][: need[c]]
                        samples[c].append(x)
                        need[c] -= len(x)
                if not any(need.values()):
                    break

    def distinct(parts: list[pa.Array]) -> int:
        return int(pc.count_distinct(pa.chunked_array(parts, pa.string())).as_py()) if parts else 0

    rows = total[cols[0]].s["rows"]
    out: dict = {
        "rows": rows,
        "log_rows": int(log_rows),
        "coverage_rows": rows / log_rows if log_rows else float("nan"),
        "users": distinct(users),
        "items": distinct(items),
        "columns": {},
    }
    for c in cols:
        sample = np.concatenate(samples[c]) if samples[c] else np.zeros((0, dims[c]))
        out["columns"][c] = {
            **total[c].summary(dims[c]),
            "effective_rank": float(effective_rank(sample)) if len(sample) > 1 else float("nan"),
        }
    return out


def table_health(table: pa.Table, log_entities: int | None = None) -> dict:
    """Health of one published snapshot (``vector`` column); coverage vs ``log_entities``."""
    out = vector_stats(_matrix(table["vector"]))
    out["entities"] = table.num_rows
    if log_entities:
        out["coverage"] = table.num_rows / log_entities
    return out


def representation_health(samples_dir: str | Path) -> dict:
    """The ``_health.json`` an extraction wrote beside its shards."""
    from extract.samples import HEALTH

    return json.loads((Path(samples_dir) / HEALTH).read_text())
