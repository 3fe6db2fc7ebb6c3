"""Build small representation tables the way the aggregate stage publishes them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from contracts import REPRESENTATION_TABLES, TableProperties
from engines import delta_io


def make_table(
    path: Path,
    ids: list[str],
    vectors: np.ndarray,
    ds: str = "2026-01-02",
    name: str = "item_ir",
    model_version: str | list[str] = "m1",
    props_dim: int | None = None,
) -> int:
    """Write ``vectors`` (n, d) as partition ``ds`` of table ``name``; returns the Delta version."""
    n, d = vectors.shape
    schema = REPRESENTATION_TABLES[name].arrow_schema(d)
    mv = model_version if isinstance(model_version, list) else [model_version] * n
    cols = {
        "entity_id": pa.array(ids, pa.string()),
        "ds": pa.array([ds] * n, pa.string()),
        "model_version": pa.array(mv, pa.string()),
        "layer": pa.array(["tower"] * n, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel(), pa.float32()), d),
        "updated_at": pa.array([datetime(2026, 1, 2, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "sample_count": pa.array([1] * n, pa.int64()),
    }
    if REPRESENTATION_TABLES[name].has_state:
        cols["decayed_sum"] = cols["vector"]
    table = pa.table(cols, schema=schema)
    props = TableProperties(dim=props_dim or d, source_checkpoint="ckpt-1", config_hash="abc")
    return delta_io.replace_day(path, table, ds, configuration=props.to_delta())


def clustered(n: int, d: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """(n, d) float32 vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return (centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)


def numpy_topk(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent brute force: rows (nq, k) and scores, best first."""
    s = queries.astype(np.float64) @ items.astype(np.float64).T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(s, rows, axis=1)
