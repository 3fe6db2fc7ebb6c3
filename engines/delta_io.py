"""Delta tables through delta-rs: day partitions replaced atomically, read back by day.

Every write here is one Delta commit, so a reader sees a day either wholly before or
wholly after it. ``app_id``/``app_version`` record an application transaction so a
retried job can ask :func:`committed_version` whether its commit already happened.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

DS = "ds"


def exists(path: str | Path) -> bool:
    return DeltaTable.is_deltatable(str(path))


def open_table(path: str | Path, version: int | None = None) -> DeltaTable:
    if not exists(path):
        raise FileNotFoundError(f"{path}: not a Delta table")
    return DeltaTable(str(path), version=version)


def list_days(path: str | Path) -> list[str]:
    """Sorted ``ds`` values that have at least one file."""
    if not exists(path):
        return []
    return sorted({p[DS] for p in DeltaTable(str(path)).partitions()})


def read_days(
    path: str | Path, days: list[str] | None = None, columns: list[str] | None = None, version: int | None = None
) -> pa.Table:
    """Rows of the given days (all days when None), with the ``ds`` column."""
    dt = open_table(path, version)
    ds = dt.to_pyarrow_dataset()
    filt = None
    if days is not None:
        filt = pc.field(DS).isin(list(days))
    return ds.to_table(filter=filt, columns=columns)


def replace_day(
    path: str | Path,
    data: pa.Table,
    ds: str,
    *,
    configuration: dict[str, str] | None = None,
    app_id: str | None = None,
    app_version: int | None = None,
    retries: int = 3,
) -> int:
    """Replace partition ``ds`` with ``data`` in one commit (creating the table if needed).

    Returns the new table version. Rows of other days are refused by delta-rs, so a
    bug can never overwrite a neighbouring day. A commit that loses a race with another
    writer is retried ``retries`` times (a partition replace is idempotent), then raised.
    """
    bad = pc.sum(pc.not_equal(data[DS], pa.scalar(ds))).as_py() if data.num_rows else 0
    if bad:
        raise ValueError(f"{path}: {bad} row(s) carry a ds other than {ds!r}; refusing to write")
    props = None
    if app_id is not None:
        props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=int(app_version or 0))])
    ensure_table(path, data.schema, configuration)
    _retrying(lambda: write_deltalake(str(path), data, mode="overwrite", predicate=f"{DS} = '{ds}'",
                                      commit_properties=props), retries)
    return DeltaTable(str(path)).version()


def _retrying(commit, retries: int) -> None:
    """Run ``commit``; on a lost commit race (another writer committed first) retry."""
    import time

    from deltalake.exceptions import CommitFailedError

    for attempt in range(retries + 1):
        try:
            return commit()
        except CommitFailedError:
            if attempt == retries:
                raise
            time.sleep(0.2 * (attempt + 1))


def ensure_table(path: str | Path, schema: pa.Schema, configuration: dict[str, str] | None = None) -> None:
    """Create an empty table partitioned by ``ds`` with its properties, if missing.

    delta-rs accepts custom (non ``delta.*``) properties only through ``alter``, so an
    empty table is created first and its properties set before any data lands: no
    reader ever sees rows without the properties that describe them.
    """
    if exists(path):
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    dt = DeltaTable.create(str(path), schema=schema, partition_by=[DS], mode="ignore")
    if configuration:
        dt.alter.set_table_properties(dict(configuration), raise_if_not_exists=False)


def committed_version(path: str | Path, app_id: str) -> int | None:
    """The last ``app_version`` recorded for ``app_id``, or None."""
    if not exists(path):
        return None
    return DeltaTable(str(path)).transaction_version(app_id)


def table_configuration(path: str | Path) -> dict[str, str]:
    return dict(open_table(path).metadata().configuration)


def day_file_uris(path: str | Path, ds: str, version: int | None = None) -> list[str]:
    """URIs of the Parquet files holding partition ``ds`` (the files lack the ``ds`` column)."""
    return sorted(open_table(path, version).file_uris(partition_filters=[(DS, "=", ds)]))


def commit_files(
    path: str | Path,
    files: list[str | Path],
    ds: str,
    schema: pa.Schema,
    *,
    configuration: dict[str, str] | None = None,
    app_id: str | None = None,
    app_version: int | None = None,
    retries: int = 3,
) -> int:
    """Replace partition ``ds`` with Parquet ``files`` already written *inside* the table folder.

    The files (e.g. written by Spark executors with ``mode("append")``) become the whole
    partition in one commit; the partition's previous files are logically removed (vacuum
    deletes them later). The files must not contain the ``ds`` column. A concurrent
    commit to the same table is retried ``retries`` times (a partition replace is
    idempotent: last writer wins), then the error is raised. Returns the new version.
    """
    import json

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    root = Path(path).resolve()
    ensure_table(root, schema, configuration)
    adds = []
    for f in files:
        f = Path(f).resolve()
        rel = f.relative_to(root).as_posix()
        meta = pq.read_metadata(f)
        if DS in meta.schema.names:
            raise ValueError(f"{f}: data files must not hold the partition column {DS!r}")
        st = f.stat()
        adds.append(
            AddAction(
                path=rel,
                size=st.st_size,
                partition_values={DS: ds},
                modification_time=int(st.st_mtime * 1000),
                data_change=True,
                stats=json.dumps({"numRecords": meta.num_rows}),
            )
        )
    props = None
    if app_id is not None:
        props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=int(app_version or 0))])

    def commit():
        dt = DeltaTable(str(root))  # the newest version: a retry rebases onto the winner's commit
        dt.create_write_transaction(adds, mode="overwrite", schema=dt.schema(), partition_by=[DS],
                                    partition_filters=[(DS, "=", ds)], commit_properties=props)

    _retrying(commit, retries)
    return DeltaTable(str(root)).version()


def compact(path: str | Path, days: list[str] | None = None, target_size: int | None = None) -> dict:
    """Rewrite small files of ``days`` (all when None) into larger ones; returns delta-rs metrics."""
    dt = open_table(path)
    filters = [(DS, "in", list(days))] if days else None
    return dt.optimize.compact(partition_filters=filters, target_size=target_size)


def vacuum(path: str | Path, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
    """Delete files no longer referenced for ``retention_hours``; never less than 7 days.

    Time travel to any version younger than the retention keeps working.
    """
    if retention_hours < 168:
        raise ValueError(f"retention_hours={retention_hours}: keep at least 7 days (168 h) of history")
    return open_table(path).vacuum(retention_hours=retention_hours, dry_run=dry_run)
