"""Write small published representation tables the way extract/ does (test helper)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from contracts import REPRESENTATION_TABLES, TableProperties
from engines.delta_io import replace_day


def write_rep_day(
    path: Path,
    name: str,
    ds: str,
    ids: list[str],
    vectors: np.ndarray,
    *,
    model_version: str = "m1",
    dim: int | None = None,
) -> None:
    """One ``ds`` partition of table ``name`` holding ``ids`` -> ``vectors`` [N, d]."""
    vectors = np.asarray(vectors, np.float32)
    dim = dim or vectors.shape[1]
    schema = REPRESENTATION_TABLES[name].arrow_schema(dim)
    n = len(ids)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    cols = {
        "entity_id": pa.array(ids, pa.string()),
        "ds": pa.array([ds] * n, pa.string()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "layer": pa.array(["user_tower"] * n, pa.string()),
        "vector": vec,
        "updated_at": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "sample_count": pa.array([1] * n, pa.int64()),
    }
    if REPRESENTATION_TABLES[name].has_state:
        cols["decayed_sum"] = vec
    table = pa.Table.from_pydict(cols, schema=schema)
    props = TableProperties(dim=dim, source_checkpoint=model_version, config_hash="test")
    replace_day(path, table, ds, configuration=props.to_delta())
