"""Point-in-time join of samples with the published representation tables.

A sample of day ``d`` may only see what was published for a day strictly before ``d``
(:func:`extract.read_asof`): the daily snapshot of day ``d`` already contains that
day's own clicks folded into CR, so joining it would leak the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import REPRESENTATION_TABLES, TableProperties
from contracts.dataset import CANONICAL_ITEM_ID, CANONICAL_USER_ID, DS
from engines import delta_io
from extract import read_asof
from extract.vectors import to_numpy

# Which sample column keys each published table.
ENTITY_COLUMN = {"user": CANONICAL_USER_ID, "item": CANONICAL_ITEM_ID}


def table_dim(table_path: str | Path) -> int:
    """Vector dimension recorded in the table's ``lfm4ads.dim`` property."""
    return TableProperties.from_delta(delta_io.table_configuration(table_path)).dim


def vectors_of(table: pa.Table, dim: int, column: str = "vector") -> np.ndarray:
    """``fixed_size_list<float32>[dim]`` column -> float32 array [N, dim] (:func:`extract.vectors.to_numpy`)."""
    return to_numpy(table[column], dim)


def join_representations(
    samples: pa.Table,
    tables: dict[str, str | Path],
    ds_column: str = DS,
    *,
    expect_dim: int | dict[str, int] | None = None,
    expect_model_version: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Look up every sample's user/item vectors, as of the day before its ``ds``.

    ``samples``: N rows with ``user_id``, ``item_id`` and ``ds_column``.
    ``tables``: table name (``user_ur``, ``item_ir``, ``user_cr``, ``item_cr``) -> Delta path.
    ``expect_dim``: one dim for all tables, or per table name; checked against each table's
    properties (ValueError on mismatch, never a reshape). ``expect_model_version`` likewise.

    Returns ``(vectors, present)``: per table name, float32 [N, d] (zeros where absent) and
    bool [N] (False where the entity is not in the snapshot, or no snapshot exists yet).
    Row order follows ``samples``.
    """
    for col in (CANONICAL_USER_ID, CANONICAL_ITEM_ID, ds_column):
        if col not in samples.column_names:
            raise ValueError(f"samples lack column {col!r} needed for the representation join")
    if samples.num_rows and samples[ds_column].null_count:
        raise ValueError(f"samples column {ds_column!r} has {samples[ds_column].null_count} null(s)")
    days = sorted(pc.unique(samples[ds_column]).to_pylist()) if samples.num_rows else []
    vectors: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for name, path in tables.items():
        if name not in REPRESENTATION_TABLES:
            raise ValueError(f"unknown representation table {name!r}; valid: {sorted(REPRESENTATION_TABLES)}")
        want = expect_dim.get(name) if isinstance(expect_dim, dict) else expect_dim
        dim = table_dim(path)
        if want is not None and dim != want:
            raise ValueError(f"{path}: vector dim is {dim}, the consumer expects {want}")
        key = ENTITY_COLUMN[REPRESENTATION_TABLES[name].entity]
        out = np.zeros((samples.num_rows, dim), np.float32)
        hit = np.zeros(samples.num_rows, bool)
        # sample days that see the same snapshot share one read (a long log has far fewer
        # snapshots than days): group them by the snapshot read_asof would pick
        published = delta_io.list_days(path) if days else []
        by_snap: dict[str, list[str]] = {}
        for d in days:
            before = [p for p in published if p < d]
            if before:
                by_snap.setdefault(before[-1], []).append(d)
        for snap_day, group in by_snap.items():
            # read_asof(first day of the group) is that snapshot, with its dim/version checks
            snap = read_asof(path, group[0], expect_dim=want, expect_model_version=expect_model_version)
            if not snap.num_rows:
                continue
            rows = np.flatnonzero(
                pc.is_in(samples[ds_column], value_set=pa.array(group)).to_numpy(zero_copy_only=False)
            )
            ids = samples[key].take(pa.array(rows))
            idx = pc.index_in(ids, value_set=snap["entity_id"])
            found = idx.is_valid().to_numpy(zero_copy_only=False)
            vecs = vectors_of(snap, dim)
            out[rows[found]] = vecs[idx.filter(idx.is_valid()).to_numpy()]
            hit[rows[found]] = True
        vectors[name], present[name] = out, hit
    return vectors, present
