"""Read one day of a representation table into a validated ``(ids, vectors)`` pair.

Every check raises :class:`SourceError` naming the table, the day and (where one exists)
the offending entity ids, before anything is built or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import TableProperties
from engines import delta_io
from extract.vectors import to_numpy


class SourceError(ValueError):
    """A representation table (or query set) cannot be indexed or searched as it is."""


@dataclass(frozen=True)
class Snapshot:
    """One day of a representation table.

    ids: (n,) object array of str; vectors: (n, dim) float32, C-contiguous.
    """

    path: str
    ds: str
    table_version: int
    model_version: str
    ids: np.ndarray
    vectors: np.ndarray
    props: TableProperties

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _examples(values, limit: int = 5) -> str:
    vals = list(values)
    more = f" (+{len(vals) - limit} more)" if len(vals) > limit else ""
    return ", ".join(repr(v) for v in vals[:limit]) + more


def vectors_to_numpy(col: pa.ChunkedArray | pa.Array, dim: int, where: str) -> np.ndarray:
    """A list / fixed_size_list<float> column -> (n, dim) float32; raises on ragged lengths or nulls."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise SourceError(f"{where}: {arr.null_count} row(s) have a null vector")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lens = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lens != dim)
        if bad.size:
            raise SourceError(
                f"{where}: {bad.size} vector(s) have length {int(lens[bad[0]])} but the table properties "
                f"say dim={dim} (rows {_examples(bad.tolist())})"
            )
        width = dim
    else:
        raise SourceError(f"{where}: vector column has type {arr.type}, expected a list of float32")
    if width != dim:
        raise SourceError(f"{where}: vectors have length {width} but the table properties say dim={dim}")
    return to_numpy(arr, dim)


def check_vectors(ids: np.ndarray, vectors: np.ndarray, where: str, *, cosine: bool) -> None:
    """Non-finite values, duplicate ids and (for cosine) zero vectors are errors."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise SourceError(f"{where}: {int(bad.sum())} vector(s) contain NaN/inf: ids {_examples(ids[bad])}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise SourceError(f"{where}: {dup.size} duplicate entity id(s): {_examples(dup)}")
    if cosine:
        zero = np.linalg.norm(vectors, axis=1) == 0
        if zero.any():
            raise SourceError(
                f"{where}: metric cosine but {int(zero.sum())} zero vector(s): ids {_examples(ids[zero])}"
            )


def read_snapshot(table_path: str | Path, ds: str | None = None, *, cosine: bool = False) -> Snapshot:
    """The ``ds`` partition (newest when None) of a representation table, validated."""
    path = str(table_path)
    if not delta_io.exists(path):
        raise SourceError(f"{path}: not a Delta table")
    try:
        props = TableProperties.from_delta(delta_io.table_configuration(path))
    except Exception as e:  # noqa: BLE001 - a pydantic error here means missing lfm4ads.* properties
        raise SourceError(f"{path}: table properties (lfm4ads.dim, ...) missing or invalid: {e}") from None
    days = delta_io.list_days(path)
    if ds is None:
        if not days:
            raise SourceError(f"{path}: table is empty (no ds partition)")
        ds = days[-1]
    where = f"{path} ds={ds}"
    if ds not in days:
        raise SourceError(f"{where}: no such partition (table has {len(days)} day(s): {_examples(days[-5:])})")
    version = delta_io.open_table(path).version()
    tbl = delta_io.read_days(path, [ds], columns=["entity_id", "model_version", "vector"], version=version)
    if tbl.num_rows == 0:
        raise SourceError(f"{where}: partition is empty")
    if tbl["entity_id"].null_count:
        raise SourceError(f"{where}: {tbl['entity_id'].null_count} row(s) have a null entity_id")
    mv = sorted(v for v in pc.unique(tbl["model_version"]).to_pylist() if v is not None)
    if len(mv) != 1:
        raise SourceError(f"{where}: expected one model_version, found {mv}")
    ids = np.asarray(tbl["entity_id"].to_pylist(), dtype=object)
    vectors = vectors_to_numpy(tbl["vector"], props.dim, where)
    check_vectors(ids, vectors, where, cosine=cosine)
    return Snapshot(path, ds, int(version), mv[0], ids, vectors, props)
