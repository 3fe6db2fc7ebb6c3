"""One Spark session per process, local by default, a master URL on a cluster."""

from __future__ import annotations

import os
import sys
from typing import Any

_SESSION = None


def get_spark(
    master: str | None = None,
    driver_memory: str = "2g",
    shuffle_partitions: int = 4,
    conf: dict[str, str] | None = None,
) -> Any:
    """Get or create the Spark session; ``conf``: further Spark settings (applied last).

    The settings apply only when this call creates the session: a later call returns the
    session as it was made (one per process), whatever it passes.

    ``outputTimestampType=TIMESTAMP_MICROS`` matters: Spark's default INT96 timestamps
    make Parquet files that delta-rs cannot read.
    """
    global _SESSION
    if _SESSION is not None and not _SESSION._jsc.sc().isStopped():
        return _SESSION
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Spark's Python workers must use this interpreter (the one with pyarrow), not the system one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    from pyspark.sql import SparkSession

    master = master or os.environ.get("LFM4ADS_SPARK_MASTER", "local[2]")
    builder = (
        SparkSession.builder.master(master)
        .appName("lfm4ads")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=/tmp/derby")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    _SESSION = builder.getOrCreate()
    _SESSION.sparkContext.setLogLevel("ERROR")
    return _SESSION


def spark_has_delta(spark: Any) -> bool:
    """True when the session's classpath carries the Delta Lake connector."""
    try:
        spark._jvm.java.lang.Class.forName("io.delta.sql.DeltaSparkSessionExtension")
        return True
    except Exception:
        return False
