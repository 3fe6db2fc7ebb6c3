"""Ingest throughput and memory: the project's file ingest vs a plain pyarrow read-and-write.

    python -m benchmarks.ingest [--rows 1000000] [--factor 10] [--rows-per-day 100000]

A synthetic ads log (Parquet; fixed daily volume, so the larger log has ``factor`` times
the days, like a log that grows day after day; a fixed user and item pool) is written
at ``rows`` and ``rows * factor`` rows. Each measurement runs in its own child process
and its peak RSS is that child's own ``ru_maxrss`` (``os.wait4``), so sizes and methods
never share a high-water mark:

- ``project``: ``datasources.materialize`` of a ``file`` source into a fresh Delta log
  (every sanity check, duplicates, fingerprints, ``hist_seq``, one commit);
- ``plain``: ``pq.read_table`` of the file and ``pq.write_table`` of it (no checks, no
  sequences): the floor for "read it and write it once".

Last line: JSON with rows/s and peak RSS per size and method, ``peak_rss_ratio_10x``
(project peak RSS at the larger size / at the smaller; target <= 1.5) and
``ratio_vs_plain`` (project rows/s / plain rows/s at the larger size; wall clock), and
``cpu_ratio_vs_plain`` (plain CPU seconds / project CPU seconds: the same ratio, steadier
on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
SPEC = {
    "name": "bench",
    "user_id": "uid",
    "item_id": "ad",
    "event_time": "ts",
    "scenario": "pl",
    "scenarios": {0: "feed", 1: "search", 2: "splash"},
    "tasks": ["click", "conv"],
    "user_features": ["zip"],
    "item_features": ["cat"],
    "sequence": {"max_len": 20, "positive_task": "click"},
}


def write_log(path: Path, rows: int, rows_per_day: int, users: int, items: int, seed: int = 0) -> None:
    """One row group per day; ids as zero-padded strings; conversion null where no click."""
    rng = np.random.default_rng(seed)
    schema = pa.schema(
        [
            ("uid", pa.string()),
            ("ad", pa.string()),
            ("ts", pa.int64()),
            ("pl", pa.int64()),
            ("click", pa.int64()),
            ("conv", pa.int64()),
            ("zip", pa.string()),
            ("cat", pa.string()),
        ]
    )
    uid_pool = pa.array([f"u{i:07d}" for i in range(users)])
    ad_pool = pa.array([f"ad{i:06d}" for i in range(items)])
    zip_pool = pa.array([f"{i:05d}" for i in range(users)])
    cat_pool = pa.array([f"c{i % 97}" for i in range(items)])
    with pq.ParquetWriter(path, schema) as w:
        for day, start in enumerate(range(0, rows, rows_per_day)):
            n = min(rows_per_day, rows - start)
            u = pa.array(rng.integers(0, users, n))
            a = pa.array(rng.zipf(1.3, n) % items)
            click = rng.random(n) < 0.1
            conv = np.where(click, (rng.random(n) < 0.2).astype(np.int64), 0)
            w.write_table(
                pa.table(
                    {
                        "uid": uid_pool.take(u),
                        "ad": ad_pool.take(a),
                        "ts": pa.array(T0 + day * 86_400 + np.sort(rng.integers(0, 86_400, n))),
                        "pl": pa.array(rng.integers(0, 3, n)),
                        "click": pa.array(click.astype(np.int64)),
                        "conv": pa.array(conv, mask=~click),
                        "zip": zip_pool.take(u),
                        "cat": cat_pool.take(a),
                    },
                    schema=schema,
                )
            )


def child(method: str, file: str, out: str) -> None:
    from contracts import (
        DatasetSpec,  # imports before the clock: both methods time only the work
    )
    from datasources import FileSource, last_ingest, materialize

    t = time.perf_counter()
    if method == "plain":
        table = pq.read_table(file)
        pq.write_table(table, out)
        rows = table.num_rows
    else:
        materialize(FileSource(kind="file", path=file, spec=DatasetSpec.model_validate(SPEC)), out)
        rows = last_ingest(out).rows_written
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t}))


def measure(method: str, file: Path, out: Path) -> dict:
    """Run one method in a fresh child; its own peak RSS from wait4 (not shared with siblings)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ingest", "--child", method, str(file), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    stdout = proc.stdout.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{method} on {file} failed with exit {proc.returncode}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    # CPU seconds of the whole child (imports included): steadier than wall time on a shared machine
    res["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    res["rows_per_s"] = round(res["rows"] / res["seconds"])
    res["seconds"] = round(res["seconds"], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="smaller size (rows)")
    ap.add_argument("--factor", type=int, default=10, help="the larger size is rows * factor")
    ap.add_argument("--rows-per-day", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--workdir", default=None, help="where the logs are written (default: a temp folder)")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [args.rows, args.rows * args.factor]
    out: dict = {"sizes": sizes, "rows_per_day": args.rows_per_day, "users": args.users, "items": args.items}
    try:
        for n in sizes:
            src = work / f"log_{n}.parquet"
            t = time.perf_counter()
            write_log(src, n, args.rows_per_day, args.users, args.items)
            print(
                f"wrote {n:,} rows ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f}s", flush=True
            )
            for method in ("plain", "project"):
                dest = work / (f"{method}_{n}" + (".parquet" if method == "plain" else ""))
                res = measure(method, src, dest)
                out[f"{method}_{n}"] = res
                print(
                    f"{method:8s} {n:>11,} rows: {res['rows_per_s']:>9,} rows/s ({res['seconds']} s wall, "
                    f"{res['cpu_s']} s CPU), peak RSS {res['peak_rss_mb']:,} MB",
                    flush=True,
                )
                shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
            src.unlink()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    small, large = sizes
    out["peak_rss_ratio_10x"] = round(
        out[f"project_{large}"]["peak_rss_mb"] / out[f"project_{small}"]["peak_rss_mb"], 3
    )
    out["plain_peak_rss_ratio_10x"] = round(
        out[f"plain_{large}"]["peak_rss_mb"] / out[f"plain_{small}"]["peak_rss_mb"], 3
    )
    out["cpu_ratio_vs_plain"] = round(out[f"plain_{large}"]["cpu_s"] / out[f"project_{large}"]["cpu_s"], 4)
    out["ratio_vs_plain"] = round(out[f"project_{large}"]["rows_per_s"] / out[f"plain_{large}"]["rows_per_s"], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
