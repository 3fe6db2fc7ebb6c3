"""Benchmark: time-decayed aggregation of N sample-level CR rows (64 dims) into CR(u).

The same state ``S(T) = sum_k exp(-(T - t_k)/tau) * CR_k`` per user, computed in one run by
- the project's Spark job, ``arrow`` formulation (``extract.aggregate_arrow.decayed_cr_rows``:
  numpy partial sums per Parquet fragment in ``mapInArrow``, shuffled by user, summed in a
  second ``mapInArrow``; what ``aggregate_day`` uses),
- the project's Spark job, ``columns`` formulation (``extract.aggregate_sql.decayed_state``:
  Spark SQL per-dimension sums), once, for comparison (``--columns-runs``),
- DuckDB SQL over the same Parquet,
- numpy in one process (sort by user, ``np.add.reduceat``): the reference.
Each engine reads the Parquet and writes its result (float64 state) as Parquet; only that
is timed. Spark session start-up is timed separately (``spark_startup_s``) and the first
Spark run (JVM JIT and Python worker warm-up) is reported as ``spark_first_s``, not in the
ratio. Then ``--repeats`` interleaved pairs, (DuckDB, Spark) and (Spark, DuckDB) in turn
(so run order cannot favour either engine): the machine is shared, so each
ratio compares two runs made seconds apart; ``ratio_spark_over_duckdb`` is the median of
the per-pair ratios, ``spark_s``/``duckdb_s`` the medians of the runs.

    python -m benchmarks.aggregate [--rows 10000000] [--users 20000] [--dim 64] [--repeats 4]

The default is 10M rows (2.4 GiB of float32 vectors, about 2 minutes in all): at 1-2M rows
DuckDB finishes in about a second and the ratio measures Spark's fixed cost per job
(scheduling two stages of Python tasks, about 1 s here), not the aggregation
(docs/tables.md has the 1M and 2M figures).

Experiments (the headline stays the default job unless these are given, and the JSON's
``knobs`` says which were): ``--tasks-per-core``, ``--partitions``, ``--target-rows``
override ``decayed_cr_rows``'s defaults, ``--conf KEY=VALUE`` sets a Spark SQL setting for
the timed runs; ``--compare`` also runs the default job in every pair and reports
``ratio_knobs_over_default`` (median of per-pair ratios, runs seconds apart).

Last stdout line: JSON with rows, spark_s, duckdb_s, numpy_s, ratio_spark_over_duckdb,
max_abs_diff (over every engine against numpy), peak_rss_mb (the driver process),
spark_tree_rss_mb (RSS of the JVM and its Python workers after the last run), and the
individual runs.
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
CUTOFF = 1709251200 + 86400  # end of DS (UTC)


def make_samples(folder: Path, rows: int, users: int, dim: int, files: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    day0 = 1709251200  # 2024-03-01T00:00:00Z
    per = -(-rows // files)
    for f in range(files):
        n = min(per, rows - f * per)
        if n <= 0:
            break
        cr = rng.standard_normal((n, dim), dtype=np.float32)
        table = pa.table(
            {
                "user_id": pa.array(np.char.add("u", rng.integers(0, users, n).astype(str))),
                "event_time": pa.array(
                    ((day0 + rng.integers(0, 86400, n)) * 1_000_000).astype(np.int64), pa.timestamp("us", tz="UTC")
                ),
                "cr": pa.FixedSizeListArray.from_arrays(pa.array(cr.ravel()), dim),
            }
        )
        pq.write_table(table, folder / f"part-{f:03d}.parquet", row_group_size=262_144)


def run_spark(spark, src: Path, out: Path, dim: int, **knobs) -> float:
    """The ``arrow`` formulation (``aggregate_day``'s); ``knobs`` (tasks_per_core,
    partitions, target_rows) override ``decayed_cr_rows``'s defaults when not None."""
    from extract.aggregate_arrow import decayed_cr_rows, parquet_files

    knobs = {k: v for k, v in knobs.items() if v is not None}
    t = time.perf_counter()
    rows = decayed_cr_rows(
        spark, parquet_files(src), "user_id", "cr", dim, CUTOFF, TAU, "none", exact_state=True, **knobs
    )
    rows.select("entity_id", rows["decayed_sum"].alias("s")).write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - t


def run_spark_columns(spark, src: Path, out: Path, dim: int) -> float:
    """The ``columns`` formulation (Spark SQL per-dimension sums)."""
    from pyspark.sql import functions as F

    from extract.aggregate_sql import decayed_state

    t = time.perf_counter()
    state = decayed_state(spark.read.parquet(str(src)), "user_id", "cr", dim, DS, TAU)
    state.select("entity_id", F.array(*[F.col(f"s{i}") for i in range(dim)]).alias("s")).write.mode(
        "overwrite"
    ).parquet(str(out))
    return time.perf_counter() - t


def tree_rss_mb() -> float | None:
    """RSS of this process's descendants (Spark's JVM and its Python workers), in MB, from
    /proc (Linux only; None elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parent, rss = {}, {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parent[int(d.name)], rss[int(d.name)] = int(fields[1]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in mine}
        mine |= frontier
    return round(sum(rss[p] for p in mine) / 2**20, 1)


def run_duckdb(src: Path, out: Path, dim: int) -> float:
    import duckdb

    cutoff = CUTOFF
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


def _numpy_sums(ids: pa.Array, ts: np.ndarray, cr: np.ndarray, cutoff: float):
    """(unique ids, float64 sums) of ``w * cr`` per id by sorting and ``np.add.reduceat``."""
    codes = ids.dictionary_encode()  # ids -> int codes (fast in Arrow)
    inv = codes.indices.to_numpy()
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    w = np.exp((ts - cutoff) / TAU) if ts is not None else None
    x = cr[order].astype(np.float64)
    if w is not None:
        x *= w[order, None]
    return codes.dictionary.take(pa.array(inv[order][starts])), np.add.reduceat(x, starts, axis=0)


def run_numpy(src: Path, out: Path, dim: int) -> float:
    """One process, one file at a time (memory stays bounded at 10M rows), then the
    per-file sums are added up per user."""
    t = time.perf_counter()
    ids, sums = [], []
    for f in sorted(src.glob("*.parquet")):
        table = pq.read_table(f)
        ts = table["event_time"].cast(pa.int64()).to_numpy() / 1e6
        cr = table["cr"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
        i, s = _numpy_sums(table["user_id"].combine_chunks(), ts, cr, CUTOFF)
        ids.append(i)
        sums.append(s)
    uniq, s = _numpy_sums(pa.concat_arrays(ids), None, np.concatenate(sums), CUTOFF)
    pq.write_table(pa.table({"entity_id": uniq, "s": pa.FixedSizeListArray.from_arrays(pa.array(s.ravel()), dim)}), out)
    return time.perf_counter() - t


def load(path: Path, dim: int) -> dict[str, np.ndarray]:
    t = pq.read_table(path).sort_by("entity_id")
    vals = np.asarray(t["s"].combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    return t["entity_id"].to_pylist(), vals.reshape(-1, dim)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument(
        "--files", type=int, default=None, help="Parquet files (default: one per 500k rows; row groups of 262,144 rows)"
    )
    p.add_argument("--workdir", default=None)
    p.add_argument("--repeats", type=int, default=4, help="interleaved pairs, DuckDB first and Spark first in turn")
    p.add_argument("--columns-runs", type=int, default=1, help="runs of the Spark SQL formulation (0: skip)")
    p.add_argument("--tasks-per-core", type=int, default=None, help="override decayed_cr_rows' default")
    p.add_argument("--partitions", type=int, default=None, help="shuffle partitions of the partials (override)")
    p.add_argument("--target-rows", type=int, default=None, help="rows per fragment (override)")
    p.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark SQL setting for the session (spark.conf.set), for experiments",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="with knobs/--conf: also run the default Spark job in every pair (A/B seconds apart)",
    )
    a = p.parse_args()
    knobs = {"tasks_per_core": a.tasks_per_core, "partitions": a.partitions, "target_rows": a.target_rows}
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-agg-"))
    src = work / "samples"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    make_samples(src, a.rows, a.users, a.dim, files=a.files or max(1, -(-a.rows // 500_000)))
    from engines import get_spark

    times: dict = {"numpy_s": run_numpy(src, work / "numpy.parquet", a.dim)}
    t = time.perf_counter()
    spark = get_spark()
    confs = [kv.split("=", 1) for kv in a.conf]
    defaults = {k: spark.conf.get(k, None) for k, _ in confs}

    def variant(on: bool) -> None:
        for k, v in confs:
            if on:
                spark.conf.set(k, v)
            elif defaults[k] is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, defaults[k])

    variant(True)
    spark.range(10).count()
    times["spark_startup_s"] = time.perf_counter() - t
    times["spark_first_s"] = run_spark(spark, src, work / "spark", a.dim, **knobs)
    duck, spk, base = [], [], []
    for i in range(a.repeats):
        # alternate which engine goes first, so that run order cannot favour either
        if i % 2 == 0:
            duck.append(run_duckdb(src, work / "duckdb.parquet", a.dim))
        spk.append(run_spark(spark, src, work / "spark", a.dim, **knobs))
        if i % 2 == 1:
            duck.append(run_duckdb(src, work / "duckdb.parquet", a.dim))
        if a.compare:
            variant(False)
            base.append(run_spark(spark, src, work / "spark_default", a.dim))
            variant(True)
    cols = [run_spark_columns(spark, src, work / "spark_columns", a.dim) for _ in range(a.columns_runs)]
    spark_rss = tree_rss_mb()
    ids, ref = load(work / "numpy.parquet", a.dim)
    diff = 0.0
    for other in (
        [work / "duckdb.parquet", work / "spark"]
        + ([work / "spark_columns"] if cols else [])
        + ([work / "spark_default"] if base else [])
    ):
        oids, vals = load(other, a.dim)
        assert oids == ids, f"{other}: different entity set"
        diff = max(diff, float(np.abs(vals - ref).max()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "rows": a.rows,
        "users": a.users,
        "dim": a.dim,
        "spark_s": round(float(np.median(spk)), 3),
        "duckdb_s": round(float(np.median(duck)), 3),
        "numpy_s": round(times["numpy_s"], 3),
        "ratio_spark_over_duckdb": round(float(np.median(np.array(spk) / np.array(duck))), 3),
        "max_abs_diff": diff,
        "peak_rss_mb": round(rss / 1024, 1),
        "spark_tree_rss_mb": spark_rss,
        "spark_startup_s": round(times["spark_startup_s"], 3),
        "spark_first_s": round(times["spark_first_s"], 3),
        "spark_runs_s": [round(x, 3) for x in spk],
        "duckdb_runs_s": [round(x, 3) for x in duck],
        "spark_columns_s": round(min(cols), 3) if cols else None,
        **(
            {
                "spark_default_runs_s": [round(x, 3) for x in base],
                "ratio_knobs_over_default": round(float(np.median(np.array(spk) / np.array(base))), 3),
            }
            if base
            else {}
        ),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "knobs": {k: v for k, v in knobs.items() if v is not None} | dict(kv.split("=", 1) for kv in a.conf),
        "note": "spark_s: arrow formulation (aggregate_day's); peak_rss_mb: the Python driver only",
    }
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
