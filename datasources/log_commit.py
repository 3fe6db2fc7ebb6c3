"""Writing days into the canonical Delta log all at once: each day's Parquet file staged
inside the table folder (unreferenced, so invisible), one Delta commit replacing those
days' partitions, the two-rename swap of a rebuilt log, and removal of files a killed
ingest staged but never committed."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from contracts import DatasetSpec
from contracts.dataset import DS
from datasources.log_store import SPEC_PROPERTY
from engines import delta_io


def stage_day(table_path: Path, day: pa.Table, ds: str):
    """Write one day's file inside the table folder (not yet referenced) -> (path, AddAction)."""
    from deltalake.transaction import AddAction

    folder = table_path / f"{DS}={ds}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-ingest-{uuid.uuid4().hex}.parquet"
    pq.write_table(day.drop_columns([DS]), path, row_group_size=256_000)
    st = path.stat()
    stats = json.dumps({"numRecords": day.num_rows})
    add = AddAction(
        path=path.relative_to(table_path).as_posix(),
        size=st.st_size,
        partition_values={DS: ds},
        modification_time=int(st.st_mtime * 1000),
        data_change=True,
        stats=stats,
    )
    return path, add


def commit_days(table_path: Path, adds, days: list[str], schema: pa.Schema, canon: DatasetSpec) -> int:
    """Replace partitions ``days`` with ``adds`` in one Delta commit; returns the new version."""
    from deltalake import DeltaTable

    delta_io.ensure_table(table_path, schema, {SPEC_PROPERTY: canon.model_dump_json()})
    dt = DeltaTable(str(table_path))
    dt.create_write_transaction(
        adds, mode="overwrite", schema=dt.schema(), partition_by=[DS], partition_filters=[(DS, "in", days)]
    )
    return DeltaTable(str(table_path)).version()


def swap_in(new: Path, log: Path) -> None:
    old = log.parent / f".{log.name}.old-{uuid.uuid4().hex[:8]}"
    if log.exists():
        os.rename(log, old)
    os.rename(new, log)
    shutil.rmtree(old, ignore_errors=True)


def remove_orphans(log: Path) -> None:
    """Delete day files a killed ingest staged but never committed (only ours: ``part-ingest-*``).

    They are invisible to readers either way; the run root's lock keeps a concurrent ingest out."""
    if not log.is_dir():
        return
    referenced = set()
    if delta_io.exists(log):
        referenced = set(pa.table(delta_io.open_table(log).get_add_actions(flatten=True))["path"].to_pylist())
    for p in log.glob(f"{DS}=*/part-ingest-*.parquet"):
        if p.relative_to(log).as_posix() not in referenced:
            p.unlink(missing_ok=True)
