"""Read a published table from Spark without the Delta connector.

Spark here has no Delta jars (Maven is unreachable), so ``spark.read.format("delta")`` fails,
and ``spark.read.parquet(<table folder>)`` reads every Parquet file on disk: the files a
``--force`` republish replaced (until vacuum deletes them), files of failed writes and files
of a write still in progress are read too, and rows are counted twice.
:func:`read_table_spark` takes the snapshot's file list from the Delta log (delta-rs)
instead, reads exactly those files in ONE Spark scan and re-attaches the partition column
``ds``, which Delta keeps in the log, not in the files. The result has the rows and the
columns of ``DeltaTable(path, version).to_pyarrow_dataset()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa

from engines import delta_io, storage

DS = delta_io.DS
_FILE, _HIT = "_lfm4ads_file", "_lfm4ads_in_log"


def _local_file(root: Path, add_path: str) -> str:
    """The file an add action names: a URI-encoded path relative to the table (or absolute)."""
    if add_path.startswith("file:"):
        return unquote(urlparse(add_path).path)
    if "://" in add_path:
        raise ValueError(f"{root}: data file {add_path!r} is outside the local file system")
    return str(root / unquote(add_path))


def snapshot_files(
    path: str | Path, *, ds: str | None = None, version: int | None = None
) -> tuple[pa.Schema, dict[str, str]]:
    """The table's Arrow schema and the data files of its snapshot: ``{local path: ds}``.

    ``version``: the snapshot of that Delta version (newest when None); ``ds``: only that
    partition (empty when the snapshot has none). For a table in an object store the paths
    are local copies in the mount's cache (:func:`engines.delta_io.day_file_uris`). Raises
    FileNotFoundError when the path is not a Delta table, or a file of the snapshot is
    gone (an old version whose replaced files were vacuumed).
    """
    dt = delta_io.open_table(path, version)
    schema = pa.schema(dt.schema().to_arrow())
    if DS not in schema.names or dt.metadata().partition_columns != [DS]:
        raise ValueError(
            f"{path}: not a table partitioned by {DS!r} alone (partition columns {dt.metadata().partition_columns})"
        )
    if storage.is_remote(path):  # Spark here has no s3a connector: read cached local copies
        days = sorted({p[DS] for p in dt.partitions()} if ds is None else {ds})
        return schema, {f: d for d in days for f in delta_io.day_file_uris(path, d, version)}
    root = Path(unquote(urlparse(str(path)).path) if str(path).startswith("file:") else path).resolve()
    adds = pa.table(dt.get_add_actions(flatten=True))
    files = {}
    if adds.num_rows:
        for p, d in zip(adds["path"].to_pylist(), adds[f"partition.{DS}"].to_pylist()):
            if ds is None or d == ds:
                files[_local_file(root, p)] = d
    gone = sorted(f for f in files if not os.path.exists(f))
    if gone:
        raise FileNotFoundError(
            f"{path}: {len(gone)} data file(s) of table version {dt.version()} are gone, e.g. {gone[0]}: "
            "vacuumed after a republish (publish retention), so this version can no longer be read"
        )
    return schema, files


def spark_schema(schema: pa.Schema):
    """The Spark ``StructType`` of an Arrow schema (timestamp with tz -> TimestampType)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _read_parquet_files(spark, schema, files: list[str]):
    """``spark.read.parquet(*files)``, the files' status read on the driver: above
    ``parallelPartitionDiscovery.threshold`` (32) paths Spark lists them with a job of one
    task per path, which took longer than the read itself for a few hundred local files."""
    key = "spark.sql.sources.parallelPartitionDiscovery.threshold"
    old = spark.conf.get(key, None)
    spark.conf.set(key, str(max(32, len(files))))
    try:
        return spark.read.schema(schema).parquet(*files)
    finally:
        spark.conf.unset(key) if old is None else spark.conf.set(key, old)


def read_table_spark(spark, path: str | Path, *, ds: str | None = None, version: int | None = None):
    """A Spark DataFrame of a Delta table's snapshot: all of it, one ``ds``, or as of ``version``.

    Needs no Delta connector: the file list comes from the Delta log (delta-rs), Spark
    reads only those Parquet files, in one scan with the table's schema (nothing inferred,
    no folder listed), and ``ds`` comes from the log's partition values (joined on each
    row's source file, ``_metadata.file_path``; a file the log does not name fails the
    job instead of dropping rows). Columns and rows equal the deltalake read of the same
    snapshot (vectors as ``array<float>``, ``updated_at`` as ``timestamp``). Lazy like any
    Spark read, but the file list is fixed when this returns. Pass ``ds`` rather than
    filtering on ``ds`` afterwards: that prunes files before Spark sees them.

    ``path``: a local folder, an object-store URI or a path under a mount of
    :mod:`engines.storage` (object-store files are first copied to the mount's local
    cache: Spark here has no ``s3a`` connector). Raises FileNotFoundError for a path that
    is not a Delta table or a version whose files were vacuumed.
    """
    from pyspark.sql import functions as F

    schema, files = snapshot_files(path, ds=ds, version=version)
    full = spark_schema(schema)
    if not files:
        return spark.createDataFrame([], full)
    in_files = spark_schema(pa.schema([f for f in schema if f.name != DS]))
    # Spark's argument is a path, not a URI: '%' and spaces are taken literally
    df = _read_parquet_files(spark, in_files, sorted(files))
    days = set(files.values())
    if len(days) == 1:
        return df.withColumn(DS, F.lit(days.pop())).select(*full.fieldNames())
    # _metadata.file_path is a URI ("file:/a%20b/..."): back to the path given above ('+' kept)
    decoded = F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), r"\+", "%2B"))
    df = df.withColumn(_FILE, F.regexp_replace(decoded, r"^file:(//)?", ""))
    mapping = spark.createDataFrame(
        [(f, d, True) for f, d in files.items()], f"{_FILE} string, {DS} string, {_HIT} boolean"
    )
    joined = df.join(F.broadcast(mapping), _FILE, "left")
    ds_col = F.when(
        F.col(_HIT).isNull(), F.raise_error(F.concat(F.lit(f"{path}: no {DS} in the Delta log for "), F.col(_FILE)))
    ).otherwise(F.col(DS))
    return joined.select(*[ds_col.alias(DS) if c == DS else F.col(c) for c in full.fieldNames()])
