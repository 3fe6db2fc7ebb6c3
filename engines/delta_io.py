"""Delta tables through delta-rs: day partitions replaced atomically, read back by day.

Every write here is one Delta commit, so a reader sees a day either wholly before or
wholly after it. ``app_id``/``app_version`` record an application transaction so a
retried job can ask :func:`committed_version` whether its commit already happened.

A ``path`` is a local folder, a URI (``s3://bucket/prefix/table``) or a local folder
under a mount of :mod:`engines.storage` (the run's ``root/tables`` mounted on
``storage.tables_uri``): :func:`engines.storage.locate` turns it into the location and
``storage_options`` delta-rs opens. On S3, delta-rs 1.x commits ``_delta_log/<n>.json``
with a conditional PUT (``If-None-Match``), so two writers never both win one version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction

from engines import storage
from engines.fault_points import fault_point

DS = "ds"


def _dt(path: str | Path, version: int | None = None) -> DeltaTable:
    loc, opts = storage.locate(path)
    return DeltaTable(loc, version=version, storage_options=opts or None)


def exists(path: str | Path) -> bool:
    loc, opts = storage.locate(path)
    return DeltaTable.is_deltatable(loc, storage_options=opts or None)


def open_table(path: str | Path, version: int | None = None) -> DeltaTable:
    from deltalake.exceptions import TableNotFoundError

    try:  # one listing of the log, not an is_deltatable check first (each is a round trip on S3)
        return _dt(path, version)
    except TableNotFoundError:
        raise FileNotFoundError(f"{path}: not a Delta table") from None


def list_days(path: str | Path) -> list[str]:
    """Sorted ``ds`` values that have at least one file."""
    try:
        return sorted({p[DS] for p in open_table(path).partitions()})
    except FileNotFoundError:
        return []


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

    Returns the new table version. Rows of other days are refused, so a bug can never
    overwrite a neighbouring day. The rows land in one Parquet file in ``data``'s order
    (written here with pyarrow, then committed by :func:`commit_files`): delta-rs's own
    writer may reorder rows between runs, and the order of the log's rows is the
    training stream's order, so it must depend on the data alone. A commit that loses a
    race with another writer is retried ``retries`` times (a partition replace is
    idempotent), then raised.
    """
    import shutil
    import tempfile
    import uuid

    import pyarrow.parquet as pq

    bad = pc.sum(pc.not_equal(data[DS], pa.scalar(ds))).as_py() if data.num_rows else 0
    if bad:
        raise ValueError(f"{path}: {bad} row(s) carry a ds other than {ds!r}; refusing to write")
    remote = storage.is_remote(path)
    folder = Path(tempfile.mkdtemp(prefix="lfm4ads-day-")) if remote else Path(path).resolve() / f"{DS}={ds}"
    ensure_table(path, data.schema, configuration)
    f = folder / f"part-{uuid.uuid4().hex}.snappy.parquet"
    try:
        if data.num_rows:  # an empty day is a partition with no files, as delta-rs writes it
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(_delta_types(data.drop_columns([DS])), f, compression="snappy")
        return commit_files(
            path,
            [f] if data.num_rows else [],
            ds,
            data.schema,
            configuration=configuration,
            app_id=app_id,
            app_version=app_version,
            retries=retries,
        )
    except BaseException:
        f.unlink(missing_ok=True)  # never committed: no reader can see it
        raise
    finally:
        if remote:
            shutil.rmtree(folder, ignore_errors=True)


def _delta_types(t: pa.Table) -> pa.Table:
    """``t`` with the Arrow types a Delta schema maps back to: Delta has no fixed-size
    list, so a ``vector`` column is written as a plain list (readers such as polars
    compare each file's stored Arrow type with the table's)."""
    fields = [
        pa.field(f.name, pa.list_(f.type.value_type), f.nullable, f.metadata)
        if pa.types.is_fixed_size_list(f.type)
        else f
        for f in t.schema
    ]
    return t.cast(pa.schema(fields, t.schema.metadata))


def _retrying(commit: Callable[[], None], retries: int) -> None:
    """Run ``commit``; on a lost commit race (another writer committed first) retry.

    The commit passes ``CommitProperties(max_commit_retries=...)``, and delta-rs's own
    retries do the rebasing they can; they do not cover this case: they only rebase a
    commit its conflict checker passes, and a partition replace through
    ``create_write_transaction`` records no read predicate, so *any* concurrent commit that
    removed files (a replace of another day included) fails it with "a concurrent
    transaction deleted data this operation read". Measured with deltalake 1.6.6, three
    threads x ten replaces, ``max_commit_retries=10``: 14 of 30 failed on distinct days,
    16 of 30 on one day; with this loop (``commit`` re-reads the newest version and
    rebuilds its removes) none did. ``tests/engines/test_delta_io.py`` checks both cases.
    """
    import time

    from deltalake.exceptions import CommitFailedError

    for attempt in range(retries + 1):
        try:
            commit()
            return
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
    loc, opts = storage.locate(path)
    if not storage.is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    dt = DeltaTable.create(loc, schema=schema, partition_by=[DS], mode="ignore", storage_options=opts or None)
    if configuration:
        dt.alter.set_table_properties(dict(configuration), raise_if_not_exists=False)


def committed_version(path: str | Path, app_id: str) -> int | None:
    """The last ``app_version`` recorded for ``app_id``, or None."""
    try:
        return open_table(path).transaction_version(app_id)
    except FileNotFoundError:
        return None


def table_configuration(path: str | Path) -> dict[str, str]:
    return dict(open_table(path).metadata().configuration)


def day_file_uris(path: str | Path, ds: str, version: int | None = None) -> list[str]:
    """URIs of the Parquet files holding partition ``ds`` (the files lack the ``ds`` column).

    For a table in an object store these are the paths of local copies in the
    mount's cache (Delta data files are immutable, so a cached copy never goes stale):
    Spark here has no ``s3a`` connector, and its tasks read these files with the Parquet
    reader or ``pyarrow`` like any local file. On a cluster the cache must be on the
    shared run root (its default)."""
    dt = open_table(path, version)
    uris = sorted(dt.file_uris(file_pruning_predicate=[(DS, "=", ds)]))
    if not storage.is_remote(path):
        return uris
    loc, opts = storage.locate(path)
    cache = storage.cache_dir(path) / "tables" / loc.split("://", 1)[1]
    adds = pa.table(dt.get_add_actions(flatten=True))
    sizes = dict(zip(adds["path"].to_pylist(), adds["size_bytes"].to_pylist()))
    out = []
    for uri in uris:
        rel = uri[len(loc) + 1 :] if uri.startswith(loc + "/") else uri.split("://", 1)[1]
        key = unquote(rel)
        local = storage.download(uri, cache / key, opts, sizes.get(key, sizes.get(rel)))
        out.append(str(local.resolve()))  # a plain path, like delta-rs gives for a local table
    return out


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
    """Replace partition ``ds`` with Parquet ``files`` in one commit; returns the new version.

    Local table: the files must already be *inside* the table folder (e.g. written by
    Spark executors with ``mode("append")``). Table in an object store: the files are
    local (staged by Spark on local disk) and are uploaded first, each with one PUT, to
    ``ds=<ds>/w-<uuid>/`` of the table; only then is the commit written, so a reader
    never sees a file before it is complete. Files uploaded by a failed commit are
    deleted (or, after a crash, left unreferenced for vacuum).

    The files become the whole partition; its previous files are logically removed
    (vacuum deletes them later). The files must not contain the ``ds`` column. A
    concurrent commit to the same table is retried ``retries`` times (a partition
    replace is idempotent: last writer wins), then the error is raised.
    """
    fault_point("delta:staged")  # the files are written, nothing is committed yet
    import json
    import uuid

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    remote = storage.is_remote(path)
    root = storage.as_location(path) if remote else Path(path).resolve()
    loc, opts = storage.locate(root)
    ensure_table(root, schema, configuration)
    folder = f"{DS}={ds}/w-{uuid.uuid4().hex}"
    adds: list[Any] = []  # AddAction; create_write_transaction takes adds and removes
    uploaded: list[str] = []
    try:
        for f in files:
            f = Path(f).resolve()
            meta = pq.read_metadata(f)
            if DS in meta.schema.names:
                raise ValueError(f"{f}: data files must not hold the partition column {DS!r}")
            if remote:
                rel = f"{folder}/{f.name}"
                storage.upload(f, f"{loc}/{rel}", opts)
                uploaded.append(rel)
            else:
                rel = f.relative_to(root).as_posix()
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
        # delta-rs's own retries rebase a commit its conflict checker passes; _retrying
        # covers the conflict it refuses (below)
        txns = [Transaction(app_id=app_id, version=int(app_version or 0))] if app_id is not None else None
        props = CommitProperties(max_commit_retries=retries, app_transactions=txns)

        def commit() -> None:
            dt = _dt(root)  # the newest version: a retry rebases onto the winner's commit
            dt.create_write_transaction(
                adds,
                mode="overwrite",
                schema=dt.schema(),
                partition_by=[DS],
                partition_filters=[(DS, "=", ds)],
                commit_properties=props,
            )

        _retrying(commit, retries)
    except BaseException:
        if uploaded:  # never committed: invisible to readers; remove them now
            storage.delete_dir(f"{loc}/{folder}", opts)
        raise
    return _dt(root).version()


def compact(path: str | Path, days: list[str] | None = None, target_size: int | None = None) -> dict[str, Any]:
    """Rewrite small files of ``days`` (all when None) into larger ones; returns delta-rs metrics."""
    dt = open_table(path)
    filters = [(DS, "in", list(days))] if days else None
    return dt.optimize.compact(partition_filters=filters, target_size=target_size)


def vacuum(
    path: str | Path, retention_hours: int = 168, dry_run: bool = False, *, enforce_retention_duration: bool = True
) -> list[str]:
    """Delete files that a commit removed more than ``retention_hours`` ago; returns their paths.

    Time travel to any version younger than the retention keeps working; older versions
    whose files are deleted can no longer be read. Below 7 days (168 h) only with
    ``enforce_retention_duration=False``: a reader still scanning an older snapshot (or a
    time-travel read of it) then fails. Only files the log marks as removed are deleted
    (delta-rs "lite" vacuum): files of a write not yet committed are never touched.
    """
    if retention_hours < 0 or (enforce_retention_duration and retention_hours < 168):
        raise ValueError(f"retention_hours={retention_hours}: keep at least 7 days (168 h) of history")
    return open_table(path).vacuum(
        retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=enforce_retention_duration
    )
