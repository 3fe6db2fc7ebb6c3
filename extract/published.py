"""The one function consumers use to read a published representation table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from contracts import REPRESENTATION_TABLES, TableProperties
from engines import delta_io
from extract.vectors import fixed_size

VECTOR_COLUMNS = ("vector", "decayed_sum")


def _fixed_size(table: pa.Table, dim: int) -> pa.Table:
    """Delta has no fixed-size arrays: restore ``fixed_size_list<float32, dim>`` on read."""
    for col in VECTOR_COLUMNS:
        if col not in table.column_names:
            continue
        i = table.schema.get_field_index(col)
        arr = table[col].combine_chunks()
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = pc.list_value_length(arr)
            if len(arr) and (pc.min(lengths).as_py() != dim or pc.max(lengths).as_py() != dim):
                raise ValueError(f"column {col}: vectors of length != {dim} in a table declaring dim {dim}")
            arr = fixed_size(arr, dim)
        table = table.set_column(i, pa.field(col, arr.type, nullable=False), arr)
    return table


def check_contract(table_path: str | Path, schema: pa.Schema, props: TableProperties) -> None:
    """ValueError unless the table's columns are one contract table's (types as Delta stores them)."""
    problems = {n: t.schema_problems(schema, props.dim) for n, t in REPRESENTATION_TABLES.items()}
    if not any(not p for p in problems.values()):
        # report against the contract table with the same column set, if any
        same = [p for p in problems.values() if all(x.startswith("column ") for x in p)]
        detail = "; ".join(same[0]) if same else f"columns {schema.names} match no representation table contract"
        raise ValueError(f"{table_path}: {detail}")


def read_asof(
    table_path: str | Path,
    ds: str,
    *,
    expect_dim: int | None = None,
    expect_model_version: str | None = None,
    inclusive: bool = False,
    version: int | None = None,
) -> pa.Table:
    """Snapshot a sample of day ``ds`` may see: the newest partition strictly before ``ds``
    (``inclusive=True``: at or before). Empty table (right schema) when none exists yet.

    ``table_path``: a local folder, an object-store URI or a path under a mount of
    :mod:`engines.storage` (storage options come from the mount).
    ``version``: read the table as it was at that Delta version (time travel by version;
    ``ds`` is time travel by day); FileNotFoundError once that version's replaced files
    were vacuumed (``AggregateConfig.vacuum_retention_hours``, docs/tables.md). Vectors come back as ``fixed_size_list<float32, dim>``
    (``dim`` from the table properties). Raises ValueError when the table's columns break
    the contract, or its dimension or model version differs from what the caller was
    trained with: never a silent reshape.
    """
    dt = delta_io.open_table(table_path, version)
    props = TableProperties.from_delta(dict(dt.metadata().configuration))
    if expect_dim is not None and props.dim != expect_dim:
        raise ValueError(f"{table_path}: vector dim is {props.dim}, the consumer expects {expect_dim}")
    dataset = dt.to_pyarrow_dataset()
    check_contract(table_path, dataset.schema, props)
    days = sorted(d for d in {p["ds"] for p in dt.partitions()} if (d <= ds if inclusive else d < ds))
    if not days:
        return _fixed_size(dataset.schema.empty_table(), props.dim)
    try:
        snap = dataset.to_table(filter=pc.field("ds") == days[-1])
    except FileNotFoundError as e:  # delta-rs: "Object at location ... not found"
        raise FileNotFoundError(
            f"{table_path}: a data file of table version {dt.version()} is gone ({str(e).splitlines()[0]}): "
            "vacuumed after a republish (publish retention), so this version can no longer be read"
        ) from None
    if expect_model_version is not None and snap.num_rows:
        versions = set(snap["model_version"].unique().to_pylist())
        if versions != {expect_model_version}:
            raise ValueError(
                f"{table_path}: partition ds={days[-1]} holds model_version(s) {sorted(versions)}, "
                f"the consumer expects {expect_model_version!r}"
            )
    return _fixed_size(snap, props.dim)
