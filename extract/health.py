"""Representation health: the numbers a publishing gate looks at before trusting a run.

Per vector column: rows, rows with NaN/inf, L2-norm statistics and the effective rank
(papers.md section 2) of a row sample; per entity: coverage of the log's users/items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

ERANK_ROWS = 4096


def _matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed/variable list<float> [N] -> float64 [N, d]."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros((0, 0))
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(len(arr), -1)


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


def samples_health(samples_dir: str | Path, dims: dict[str, int], log_rows: int) -> dict:
    """Health of one extracted day (``dims``: vector column -> dim).

    Streams the shards once; the effective rank uses an evenly spaced row sample.
    """
    dataset = pads.dataset(str(samples_dir), format="parquet", exclude_invalid_files=True,
                           ignore_prefixes=["_", "."])
    cols = list(dims)
    stats: dict[str, dict] = {c: {"nan_inf_rows": 0, "rows": 0, "n": 0, "s1": 0.0, "s2": 0.0,
                                  "min": np.inf, "max": -np.inf, "zero": 0, "sample": []} for c in cols}
    users, items = set(), set()
    for batch in dataset.to_batches(columns=["user_id", "item_id", *cols], batch_size=65536):
        users.update(batch.column("user_id").unique().to_pylist())
        items.update(batch.column("item_id").unique().to_pylist())
        for c in cols:
            x = _matrix(batch.column(c))
            s = stats[c]
            finite = np.isfinite(x).all(axis=1)
            norms = np.linalg.norm(x[finite], axis=1)
            s["rows"] += len(x)
            s["nan_inf_rows"] += int((~finite).sum())
            s["n"] += len(norms)
            s["s1"] += float(norms.sum())
            s["s2"] += float((norms**2).sum())
            s["zero"] += int((norms == 0).sum())
            if len(norms):
                s["min"], s["max"] = min(s["min"], float(norms.min())), max(s["max"], float(norms.max()))
            keep = ERANK_ROWS - sum(len(a) for a in s["sample"])
            if keep > 0:
                s["sample"].append(x[finite][:keep])
    from pretrain.metrics import effective_rank

    out: dict = {"rows": stats[cols[0]]["rows"], "log_rows": int(log_rows),
                 "coverage_rows": stats[cols[0]]["rows"] / log_rows if log_rows else float("nan"),
                 "users": len(users), "items": len(items), "columns": {}}
    for c in cols:
        s = stats[c]
        mean = s["s1"] / s["n"] if s["n"] else float("nan")
        sample = np.concatenate(s["sample"]) if s["sample"] else np.zeros((0, dims[c]))
        out["columns"][c] = {
            "dim": dims[c], "rows": s["rows"], "nan_inf_rows": s["nan_inf_rows"], "zero_rows": s["zero"],
            "norm_mean": mean,
            "norm_std": float(np.sqrt(max(s["s2"] / s["n"] - mean**2, 0.0))) if s["n"] else float("nan"),
            "norm_min": s["min"] if s["n"] else float("nan"), "norm_max": s["max"] if s["n"] else float("nan"),
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
    import json

    from extract.samples import HEALTH

    return json.loads((Path(samples_dir) / HEALTH).read_text())
