"""The canonical log as a Delta table partitioned by ``ds``: write a day, read days back.

The canonical :class:`~contracts.DatasetSpec` is stored in the table's properties
(``lfm4ads.dataset_spec``), so every later stage reads the schema with the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from contracts import DatasetSpec
from contracts.dataset import CANONICAL_SEQUENCE, DS
from engines import delta_io

SPEC_PROPERTY = "lfm4ads.dataset_spec"


def canonical_schema(spec: DatasetSpec) -> pa.Schema:
    """Arrow schema of the canonical log for ``spec`` (raw or canonical)."""
    c = spec.canonical()
    fields = [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(DS, pa.string(), nullable=False),
        pa.field("scenario", pa.int32(), nullable=False),
        pa.field("sample_type", pa.string(), nullable=False),
    ]
    fields += [pa.field(t, pa.float32()) for t in c.tasks]
    fields += [pa.field(f, pa.string()) for f in (*c.user_features, *c.item_features)]
    fields.append(pa.field(CANONICAL_SEQUENCE, pa.list_(pa.string())))
    return pa.schema(fields)


def write_log_day(log_path: str | Path, day: pa.Table, ds: str, spec: DatasetSpec) -> int:
    """Replace day ``ds`` of the log (one commit). ``day`` must already be canonical."""
    schema = canonical_schema(spec)
    day = day.select(schema.names).cast(schema)
    conf = {SPEC_PROPERTY: spec.canonical().model_dump_json()}
    return delta_io.replace_day(log_path, day, ds, configuration=conf)


def read_log_spec(log_path: str | Path) -> DatasetSpec:
    conf = delta_io.table_configuration(log_path)
    if SPEC_PROPERTY not in conf:
        raise ValueError(f"{log_path}: not an lfm4ads log (table property {SPEC_PROPERTY} missing)")
    return DatasetSpec.model_validate(json.loads(conf[SPEC_PROPERTY]))


def log_days(log_path: str | Path) -> list[str]:
    return delta_io.list_days(log_path)


def read_log(log_path: str | Path, days: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
    """Canonical rows of ``days`` (all when None). An asked-for day with no rows is an error."""
    if days is not None:
        have = set(log_days(log_path))
        empty = [d for d in days if d not in have]
        if empty:
            raise ValueError(f"{log_path}: no rows for ds={empty} (log has {len(have)} day(s))")
    table = delta_io.read_days(log_path, days, columns)
    return table.sort_by([("event_time", "ascending")]) if "event_time" in table.column_names else table


def log_files(log_path: str | Path, ds: str) -> list[str]:
    """Parquet file URIs of one day (for engines that read files directly, e.g. Ray Data)."""
    files = delta_io.open_table(log_path).file_uris(file_pruning_predicate=[(DS, "=", ds)])
    if not files:
        raise ValueError(f"{log_path}: no rows for ds={ds!r}")
    return files
