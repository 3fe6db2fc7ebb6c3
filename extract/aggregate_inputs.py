"""What one day's aggregation reads: the day cutoff, the extracted sample days it folds
(with their day-bound check) and each table's previous published partition."""

from __future__ import annotations

from pathlib import Path

from contracts import REPRESENTATION_TABLES
from contracts.table_rules import day_cutoff
from engines import delta_io
from extract.samples import read_marker
from extract.table_checks import SPARK_TYPES


def cutoff_seconds(ds: str) -> float:
    return day_cutoff(ds).timestamp()


def previous_partition(spark, table_path: Path, name: str, ds: str):
    """(DataFrame of the newest partition strictly before ``ds``, its ds) or (None, None)."""
    days = [d for d in delta_io.list_days(table_path) if d < ds]
    if not days:
        return None, None
    uris = delta_io.day_file_uris(table_path, days[-1])
    # an explicit schema spares Spark a footer-reading job (and pins the types)
    names = REPRESENTATION_TABLES[name].arrow_schema(1).names
    ddl = ", ".join(f"{c} {SPARK_TYPES[c]}" for c in names if c != "ds")
    return spark.read.schema(ddl).parquet(*uris), days[-1]


def read_samples(spark, dirs: dict[str, Path]):
    """Union of the extracted days ``dirs`` (ds -> folder) with each row's day bounds
    (``_lo``/``_hi``, unix microseconds) for :func:`check_samples`."""
    from pyspark.sql import functions as F

    frames = []
    for d, folder in sorted(dirs.items()):
        hi = day_cutoff(d).timestamp() * 1e6
        frames.append(
            spark.read.parquet(str(folder.resolve()))
            .withColumn("_lo", F.lit(hi - 86400e6))
            .withColumn("_hi", F.lit(hi))
        )
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out


def check_samples(samples, ds: str, samples_dir) -> int:
    """Row count; ValueError when there are no samples or a timestamp lies outside its day."""
    from pyspark.sql import functions as F

    us = F.unix_micros(F.col("event_time"))
    outside = us.isNull() | (us < F.col("_lo")) | (us >= F.col("_hi"))
    row = samples.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(outside, 1).otherwise(0)).alias("bad"),
        F.min(F.when(outside, F.col("user_id"))).alias("example"),
    ).collect()[0]
    if not row["n"]:
        raise ValueError(f"{samples_dir}: no samples for ds={ds}; nothing published")
    if row["bad"]:
        raise ValueError(
            f"{samples_dir}: {row['bad']} sample(s) have event_time outside their day (UTC), "
            f"e.g. user_id={row['example']!r}; nothing published"
        )
    return int(row["n"])


def days_to_fold(
    samples_dir: Path, ds: str, prev_ds: str | None, model_version: str, layer: str, column: str
) -> dict[str, Path]:
    """``ds`` plus every extracted day after ``prev_ds`` (the newest published partition)
    that was never published: sibling ``ds=<d>`` folders of ``samples_dir``. Without them
    a run that publishes every N days would drop the samples of the days in between."""
    out = {ds: samples_dir}
    for folder in sorted(samples_dir.parent.glob("ds=*")):
        d = folder.name[3:]
        if d < ds and (prev_ds is None or d > prev_ds):
            marker = read_marker(folder)  # an unfinished day in between is an error, not a gap
            if marker.model_version != model_version:
                raise ValueError(
                    f"{folder}: extracted with model {marker.model_version}, aggregating for {model_version}"
                )
            if marker.layers.get(layer) != column:
                raise ValueError(f"{folder}: layer {layer!r} is not in column {column!r} there ({marker.layers})")
            out[d] = folder
    return out
