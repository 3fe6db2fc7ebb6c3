"""The one publishing interface for representation tables: validate, then replace a ``ds``.

:func:`publish` takes either a ``pyarrow.Table`` (small data, tests) or a Spark
DataFrame (the daily job) and

1. validates it against ``REPRESENTATION_TABLES[name].arrow_schema(dim)``, the row rules
   of :mod:`contracts.table_rules` (compiled to Arrow and Spark in :mod:`extract.table_checks`) and the
   table's :class:`TableProperties` (wrong vector length, NaN/inf, null or duplicate
   ids, a ``model_version`` other than the table's, ``updated_at`` after the day's cutoff,
   a ``ds`` other than the one published): a :class:`PublishError` names the row count
   and an example id, and nothing is committed;
2. replaces partition ``ds`` in ONE Delta commit (a rerun is idempotent);
3. records the application transaction ``lfm4ads:<table>:<model_version>:<ds>`` so a
   retried job can ask :func:`already_published`.

Write paths (``write_path``):

- ``parquet_commit`` (default when Spark has no Delta connector, as here): executors
  write Parquet with ``mode("append")`` into a fresh ``ds=<d>/w-<uuid>/`` folder of
  the table (never ``overwrite`` into the table folder: that deletes ``_delta_log``),
  and the driver commits those files with delta-rs (:func:`engines.delta_io.commit_files`).
- ``spark_delta``: Spark's own ``format("delta")`` with ``replaceWhere`` and
  ``txnAppId``/``txnVersion``, chosen by ``auto`` when :func:`engines.spark_has_delta`.
- ``arrow``: a ``pyarrow.Table`` written by delta-rs (:func:`engines.delta_io.replace_day`).

A table in an object store (a URI, or a path under a mount of :mod:`engines.storage`):
``arrow`` writes straight to the store through delta-rs; ``parquet_commit`` has Spark
write the Parquet files into a local staging folder (the mount's cache; Spark has no
``s3a`` connector here), then :func:`engines.delta_io.commit_files` uploads them and
commits. ``auto`` picks ``parquet_commit`` for such tables; ``spark_delta`` is refused.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from contracts import TableProperties
from contracts.tables import PUBLISHED_TABLES  # + user_query (the retrieval step's query tower)
from engines import delta_io, storage
from extract.table_checks import PublishError, validate_arrow, validate_spark


def app_id(name: str, model_version: str, ds: str) -> str:
    return f"lfm4ads:{name}:{model_version}:{ds}"


def already_published(table_path: str | Path, name: str, model_version: str, ds: str) -> bool:
    """True when a publish of (table, model version, ds) has been committed."""
    return delta_io.committed_version(table_path, app_id(name, model_version, ds)) is not None


def check_table_properties(table_path: str | Path, props: TableProperties) -> None:
    """Refuse to publish into a table made by another model, dimension or normalisation."""
    try:
        have = TableProperties.from_delta(delta_io.table_configuration(table_path))
    except FileNotFoundError:  # a new table
        return
    for key in ("dim", "source_checkpoint", "normalisation", "tau_seconds"):
        if getattr(have, key) != getattr(props, key):
            raise PublishError(
                f"{table_path}: table has {key}={getattr(have, key)!r}, this publish has "
                f"{getattr(props, key)!r}; a new model or setting needs a new table; nothing committed"
            )


@dataclass
class PreparedPublish:
    """A validated, not yet committed publish (see :func:`prepare_publish`)."""

    table_path: Path | str  # a str only for a URI
    name: str
    ds: str
    data: object  # validated pa.Table, or a persisted Spark DataFrame
    props: TableProperties
    schema: pa.Schema
    write_path: str
    txn: dict
    # files this commit supersedes are deleted once older than this (None: never at publish)
    vacuum_retention_hours: int | None = 168  # Delta's default (delta.deletedFileRetentionDuration)

    def release(self) -> None:
        if not isinstance(self.data, pa.Table):
            self.data.unpersist()


def prepare_publish(
    table_path: str | Path,
    name: str,
    ds: str,
    data,
    props: TableProperties,
    *,
    write_path: str = "auto",
    unique_by_construction: bool = False,
    vacuum_retention_hours: int | None = 168,
) -> PreparedPublish:
    """Validate ``data`` (pyarrow Table or Spark DataFrame) for partition ``ds``; commit
    nothing. A Spark frame is persisted so validation and write compute it once.
    ``vacuum_retention_hours``: see :func:`vacuum_after_publish`."""
    if vacuum_retention_hours is not None and vacuum_retention_hours < 0:
        raise ValueError(f"vacuum_retention_hours={vacuum_retention_hours}: give hours >= 0, or None for no vacuum")
    vac = dict(vacuum_retention_hours=vacuum_retention_hours)
    if name not in PUBLISHED_TABLES:
        raise PublishError(f"unknown table {name!r}; valid: {sorted(PUBLISHED_TABLES)}")
    table_path = storage.as_location(table_path)
    check_table_properties(table_path, props)
    schema = PUBLISHED_TABLES[name].arrow_schema(props.dim)
    txn = dict(app_id=app_id(name, props.source_checkpoint, ds), app_version=int(time.time() * 1000))
    if isinstance(data, pa.Table):
        return PreparedPublish(
            table_path, name, ds, validate_arrow(name, ds, data, schema, props), props, schema, "arrow", txn, **vac
        )
    remote = storage.is_remote(table_path)
    if write_path == "auto":
        from engines import spark_has_delta

        write_path = "spark_delta" if not remote and spark_has_delta(data.sparkSession) else "parquet_commit"
    if write_path == "spark_delta" and remote:
        raise ValueError(
            f"{table_path}: write_path spark_delta cannot write to an object store here (no s3a "
            "connector); use auto, parquet_commit or arrow"
        )
    if write_path not in ("spark_delta", "parquet_commit", "arrow"):
        raise ValueError(f"write_path {write_path!r}: expected auto, parquet_commit, spark_delta or arrow")
    if write_path == "arrow":
        table = validate_arrow(name, ds, data.toArrow(), schema, props)
        return PreparedPublish(table_path, name, ds, table, props, schema, "arrow", txn, **vac)
    data = data.persist()
    try:
        validate_spark(name, ds, data, schema, props, check_unique=not unique_by_construction)
    except BaseException:
        data.unpersist()
        raise
    return PreparedPublish(table_path, name, ds, data, props, schema, write_path, txn, **vac)


def commit_publish(p: PreparedPublish) -> int:
    """Replace partition ``p.ds`` with the validated data in one commit; the new version.

    Then vacuums the files that commits removed more than ``p.vacuum_retention_hours``
    ago (see :func:`vacuum_after_publish`)."""
    try:
        if p.write_path == "arrow":
            version = delta_io.replace_day(p.table_path, p.data, p.ds, configuration=p.props.to_delta(), **p.txn)
        elif p.write_path == "spark_delta":
            version = _write_spark_delta(p.table_path, p.ds, p.data, p.schema, p.props, p.txn)
        else:
            version = _write_parquet_commit(p.table_path, p.ds, p.data, p.schema, p.props, p.txn)
    finally:
        p.release()
    vacuum_after_publish(p.table_path, p.vacuum_retention_hours)
    return version


def vacuum_after_publish(table_path: str | Path, retention_hours: int | None) -> list[str]:
    """Delete the files commits removed more than ``retention_hours`` ago (a republished
    ``ds``'s old files), so plain Parquet readers stop counting them twice; returns them.

    ``None``: nothing (``maintain_tables`` only). Below 168 h (0 = at once) is allowed
    here because it was configured on purpose: time travel to a version whose files are
    deleted stops working, and a reader still scanning an older snapshot fails. The
    publish is already committed: a failed vacuum is logged, never raised.
    """
    if retention_hours is None:
        return []
    import logging

    try:
        return delta_io.vacuum(table_path, retention_hours, enforce_retention_duration=retention_hours >= 168)
    except Exception as e:  # noqa: BLE001 - the data is published; the next publish vacuums again
        logging.getLogger(__name__).warning("%s: vacuum after publish failed (%s); files are kept", table_path, e)
        return []


def publish(
    table_path: str | Path,
    name: str,
    ds: str,
    data,
    props: TableProperties,
    *,
    write_path: str = "auto",
    unique_by_construction: bool = False,
    vacuum_retention_hours: int | None = 168,
) -> int:
    """Validate ``data`` (pyarrow Table or Spark DataFrame) and make it partition ``ds``.

    Returns the table version that holds it. ``props.source_checkpoint`` is the model
    version every row must carry. ``unique_by_construction`` (Spark input only) skips
    the duplicate-id check, an extra shuffle, for frames grouped by ``entity_id``.
    ``vacuum_retention_hours``: after the commit, delete files superseded longer ago than
    this (default 168 h; None: never here; see :func:`vacuum_after_publish`).
    """
    return commit_publish(
        prepare_publish(
            table_path,
            name,
            ds,
            data,
            props,
            write_path=write_path,
            unique_by_construction=unique_by_construction,
            vacuum_retention_hours=vacuum_retention_hours,
        )
    )


# --- write paths -----------------------------------------------------------------------
def _spark_columns(df, schema: pa.Schema):
    from pyspark.sql import functions as F

    return df.select(*[F.col(c) for c in schema.names])


def _write_parquet_commit(table_path, ds: str, df, schema: pa.Schema, props: TableProperties, txn: dict) -> int:
    remote = storage.is_remote(table_path)
    root = table_path if remote else Path(table_path).resolve()
    delta_io.ensure_table(root, schema, props.to_delta())
    if remote:  # staged on local disk, uploaded by commit_files
        name = str(table_path).rstrip("/").rsplit("/", 1)[-1]
        staging = storage.cache_dir(table_path) / "staging" / f"{name}-ds={ds}-{uuid.uuid4().hex}"
    else:
        staging = root / f"ds={ds}" / f"w-{uuid.uuid4().hex}"
    try:
        # append into a fresh folder: Spark never lists or deletes anything of the table
        _spark_columns(df, schema).drop("ds").write.mode("append").parquet(str(staging))
        files = sorted(staging.glob("*.parquet"))
        for marker in staging.glob("_*"):
            marker.unlink() if marker.is_file() else shutil.rmtree(marker, ignore_errors=True)
        for crc in staging.glob(".*.crc"):
            crc.unlink()
        version = delta_io.commit_files(root, files, ds, schema, configuration=props.to_delta(), **txn)
        if remote:
            shutil.rmtree(staging, ignore_errors=True)
        return version
    except BaseException:
        # not committed: the staged files are invisible to readers; remove them now
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_spark_delta(table_path, ds: str, df, schema: pa.Schema, props: TableProperties, txn: dict) -> int:
    root = Path(table_path).resolve()
    delta_io.ensure_table(root, schema, props.to_delta())  # properties set before any data lands
    (
        _spark_columns(df, schema)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"ds = '{ds}'")
        .option("txnAppId", txn["app_id"])
        .option("txnVersion", str(txn["app_version"]))
        .partitionBy("ds")
        .save(str(root))
    )
    return delta_io.open_table(root).version()
