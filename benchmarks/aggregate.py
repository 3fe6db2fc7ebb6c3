"""Benchmark: time-decayed aggregation of N sample-level CR rows (64 dims) into CR(u).

The same state ``S(T) = sum_k exp(-(T - t_k)/tau) * CR_k`` per user, computed in one run by
- the project's Spark job (``extract.aggregate.decayed_state``, per-dimension sums),
- DuckDB SQL over the same Parquet,
- numpy (sort by user, ``np.add.reduceat``).
Each engine reads the Parquet and writes its result as Parquet; only that is timed.

    python -m benchmarks.aggregate [--rows 2000000] [--users 20000] [--dim 64]

Last stdout line: JSON with rows, spark_s (second run in the session), spark_first_s
(first run: includes JIT warm-up), spark_warm_s (best of runs 3..``--spark-runs``: the JVM's
JIT needs a few runs to compile the wide generated aggregation code), duckdb_s, numpy_s,
ratio_spark_over_duckdb (second run), ratio_warm_spark_over_duckdb, max_abs_diff, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DS = "2024-03-01"
TAU = 86400.0


def make_samples(folder: Path, rows: int, users: int, dim: int, files: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    day0 = 1709251200  # 2024-03-01T00:00:00Z
    per = -(-rows // files)
    for f in range(files):
        n = min(per, rows - f * per)
        if n <= 0:
            break
        cr = rng.standard_normal((n, dim), dtype=np.float32)
        table = pa.table({
            "user_id": pa.array(np.char.add("u", rng.integers(0, users, n).astype(str))),
            "event_time": pa.array(((day0 + rng.integers(0, 86400, n)) * 1_000_000).astype(np.int64),
                                   pa.timestamp("us", tz="UTC")),
            "cr": pa.FixedSizeListArray.from_arrays(pa.array(cr.ravel()), dim),
        })
        pq.write_table(table, folder / f"part-{f:03d}.parquet", row_group_size=262_144)


def run_spark(src: Path, out: Path, dim: int) -> float:
    from engines import get_spark
    from extract.aggregate import decayed_state

    spark = get_spark()
    spark.range(10).count()  # session start-up is not the aggregation
    t = time.perf_counter()
    samples = spark.read.parquet(str(src))
    state = decayed_state(samples, "user_id", "cr", dim, DS, TAU)
    from pyspark.sql import functions as F

    state.select("entity_id", F.array(*[F.col(f"s{i}") for i in range(dim)]).alias("s")) \
        .write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t


def run_duckdb(src: Path, out: Path, dim: int) -> float:
    import duckdb

    cutoff = 1709251200 + 86400
    con = duckdb.connect()
    con.execute(f"SET threads={os.cpu_count()}")
    sums = ", ".join(f"sum(w * cr[{i + 1}]::DOUBLE) AS s{i}" for i in range(dim))
    arr = ", ".join(f"s{i}" for i in range(dim))
    t = time.perf_counter()
    con.execute(f"""
        COPY (
          SELECT entity_id, [{arr}] AS s FROM (
            SELECT user_id AS entity_id, {sums}
            FROM (SELECT user_id, cr, exp((epoch_us(event_time) / 1e6 - {cutoff}) / {TAU}) AS w
                  FROM read_parquet('{src}/*.parquet'))
            GROUP BY user_id)
        ) TO '{out}' (FORMAT PARQUET)
    """)
    return time.perf_counter() - t


def run_numpy(src: Path, out: Path, dim: int) -> float:
    cutoff = 1709251200 + 86400
    t = time.perf_counter()
    table = pq.read_table(src)
    codes = table["user_id"].combine_chunks().dictionary_encode()  # ids -> int codes (fast in Arrow)
    inv = codes.indices.to_numpy()
    ts = table["event_time"].cast(pa.int64()).to_numpy() / 1e6
    cr = table["cr"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    w = np.exp((ts - cutoff) / TAU)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    s = np.add.reduceat(cr[order].astype(np.float64) * w[order, None], starts, axis=0)
    uniq = codes.dictionary.take(pa.array(inv[order][starts]))
    pq.write_table(pa.table({"entity_id": uniq, "s": pa.FixedSizeListArray.from_arrays(pa.array(s.ravel()), dim)}), out)
    return time.perf_counter() - t


def load(path: Path, dim: int) -> dict[str, np.ndarray]:
    t = pq.read_table(path).sort_by("entity_id")
    vals = np.asarray(t["s"].combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    return t["entity_id"].to_pylist(), vals.reshape(-1, dim)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--workdir", default=None)
    p.add_argument("--spark-runs", type=int, default=4, help="Spark runs in one session (>= 2)")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-agg-"))
    src = work / "samples"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    make_samples(src, a.rows, a.users, a.dim)
    times = {
        "numpy_s": run_numpy(src, work / "numpy.parquet", a.dim),
        "duckdb_s": run_duckdb(src, work / "duckdb.parquet", a.dim),
        "spark_first_s": run_spark(src, work / "spark", a.dim),  # includes JVM JIT warm-up
        "spark_s": run_spark(src, work / "spark", a.dim),
    }
    warm = [run_spark(src, work / "spark", a.dim) for _ in range(max(0, a.spark_runs - 2))]
    if warm:
        times["spark_warm_s"] = min(warm)
    ids, ref = load(work / "numpy.parquet", a.dim)
    diff = 0.0
    for other in (work / "duckdb.parquet", work / "spark"):
        oids, vals = load(other, a.dim)
        assert oids == ids, f"{other}: different entity set"
        diff = max(diff, float(np.abs(vals - ref).max()))
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result = {"rows": a.rows, **{k: round(v, 3) for k, v in times.items()},
              "ratio_spark_over_duckdb": round(times["spark_s"] / times["duckdb_s"], 3),
              "ratio_warm_spark_over_duckdb": round(times.get("spark_warm_s", times["spark_s"]) / times["duckdb_s"], 3),
              "load_avg_1m": round(os.getloadavg()[0], 2),
              "max_abs_diff": diff, "peak_rss_mb": round(rss / 1024, 1),
              "note": "peak_rss_mb: the Python driver (Spark's JVM is a separate process)"}
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
