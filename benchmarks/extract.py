"""Benchmark: sample-level representation extraction, four ways, one generated log + checkpoint.

- forward: the model alone over pre-encoded tensors (all cores) on the first
  ``--forward-rows`` rows: the compute limit;
- loop: one process reads the log's Parquet (the columns the model needs), encodes, runs
  the model, writes the same output columns as the job (all cores); ``--loop-rows`` caps it
  to a prefix for very large runs (its rows/s is then the prefix's, labelled in the JSON);
- naive: a torch DataLoader over a pandas frame with per-row indexing (as the public
  LFM4Ads code does), on the first ``--naive-rows`` rows;
- ray: ``extract.extract_days`` over every day of the log in ONE Ray Data job (actor
  pool), Ray start-up excluded, actor start (checkpoint load) and the health pass included.

    python -m benchmarks.extract [--rows 300000] [--days 1] [--repeats 1] [--batch-size 4096]
        [--pool 1] [--cpus-per-actor 2] [--threads 2] [--model default|small] [--workdir W]

``--repeats N`` runs loop and job alternately N times and keeps the best of each (the
least disturbed run on a shared machine; every run is in the JSON). The log and checkpoint
are built in a child process (their memory never counts in ``peak_rss_mb``) and, with
``--workdir``, reused by a later run of the same shape. 10M rows:

    python -m benchmarks.extract --rows 10000000 --days 10 --loop-rows 1000000 --workdir /tmp/x

Decode mode (no model): the log's units decoded one at a time from their row group's
first row (the job before) vs one pass per run (now): ``--decode --rows 1000000``.

Backfill mode (many small days, e.g. MovieLens-100K's ~215 days of ~500 rows):
``extract.extract_days`` over all days in ONE Ray Data job vs ``extract_day`` per day
(one job each, timed on the first ``--per-day-sample`` days and extrapolated):

    python -m benchmarks.extract --backfill-days 200 --rows-per-day 500

The checkpoint has random weights: throughput does not depend on training. ``--model
small`` is a much cheaper model (the pipeline's own costs weigh more). Last stdout line:
JSON with rows, rows_per_s, loop_rows_per_s, forward_rows_per_s, naive_rows_per_s,
ratio_vs_loop, ratio_vs_forward, speedup_vs_naive, peak_rss_mb (max of the driver and the
Ray actor; the driver's excludes the build), and ``ray_phases_best`` (the best Ray run's
phases, timed here: ``benchmarks/extract_timing.py``: start-up, actor constructor, busy
time, finalise, actor niceness).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "OMP_NUM_THREADS" not in os.environ:
    # Ray gives each actor OMP_NUM_THREADS = its CPUs; the in-process variants get the same
    # OpenMP set-up (set before torch loads). Measured at load ~20: 2 torch threads ran at
    # 1.4k rows/s without it, 2.4k with it (forward pass, same process otherwise).
    _argv = sys.argv[1:]
    os.environ["OMP_NUM_THREADS"] = _argv[_argv.index("--threads") + 1] if "--threads" in _argv else str(os.cpu_count())

import pyarrow.parquet as pq

from benchmarks.extract_data import MODELS, build, build_once
from benchmarks.extract_modes import backfill, decode_passes
from benchmarks.extract_reference import forward_only, head_rows, naive, plain_loop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=300_000, help="rows in all (split evenly over --days)")
    p.add_argument("--days", type=int, default=1, help="> 1: the Ray job extracts every day in ONE job")
    p.add_argument("--model", choices=sorted(MODELS), default="default")
    p.add_argument("--naive-rows", type=int, default=20_000)
    p.add_argument("--forward-rows", type=int, default=300_000, help="forward-only on the first N rows (in memory)")
    p.add_argument(
        "--loop-rows",
        type=int,
        default=0,
        help="> 0: the plain loop runs on the first N rows only (its rows/s is that prefix's)",
    )
    p.add_argument("--repeats", type=int, default=1, help="loop and Ray job alternately N times; best of each")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--pool", type=int, default=1)
    p.add_argument("--cpus-per-actor", type=float, default=float(os.cpu_count()))
    p.add_argument("--rows-per-unit", type=int, default=65536)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of every variant")
    p.add_argument("--workdir", default=None, help="keep (and reuse) the generated log + checkpoint here")
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backfill-days", type=int, default=0, help="> 0: the backfill comparison instead")
    p.add_argument("--rows-per-day", type=int, default=500)
    p.add_argument("--per-day-sample", type=int, default=5)
    p.add_argument("--decode", action="store_true", help="the read side only: per-unit vs one-pass decoding")
    a = p.parse_args()
    if a.build_only:
        build(Path(a.workdir), a.rows // a.days, a.days, a.model)
        return
    if a.backfill_days:
        return backfill(a)
    if a.decode:
        return decode_passes(a)
    load_start = os.getloadavg()[0]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-extract-"))
    t0 = time.perf_counter()
    layout, ckpt = build_once(work, a.rows // a.days, a.days, a.model)
    build_s = time.perf_counter() - t0

    from benchmarks.extract_timing import timed_extract_days
    from datasources import log_days
    from engines import delta_io, ensure_ray
    from extract import ExtractConfig

    days = log_days(layout.log)
    uris = [u for d in days for u in delta_io.day_file_uris(layout.log, d)]
    n = sum(pq.read_metadata(u.removeprefix("file://")).num_rows for u in uris)
    head = head_rows(uris, min(max(a.forward_rows, a.naive_rows), n))
    fwd = forward_only(ckpt, head.slice(0, min(a.forward_rows, n)), a.batch_size, a.threads)
    naive_rps = naive(ckpt, head.slice(0, min(a.naive_rows, n)), a.batch_size, a.threads)
    del head

    ensure_ray(num_cpus=os.cpu_count(), object_store_gb=1.0)
    cfg = ExtractConfig(
        batch_size=a.batch_size,
        actor_pool_size=a.pool,
        num_cpus=a.cpus_per_actor,
        torch_threads=max(1, a.threads // a.pool),
        rows_per_unit=a.rows_per_unit,
        force=True,
    )
    loops, rays, actor_rss, phases = [], [], 0.0, []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        loop_n = plain_loop(ckpt, uris, work / "loop", a.batch_size, a.threads, a.loop_rows)
        loops.append(loop_n / (time.perf_counter() - t0))
        shutil.rmtree(work / "loop", ignore_errors=True)  # disk: the loop's output is not kept
        t0 = time.perf_counter()
        res, phased, rss = timed_extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, cfg)
        ray_s = time.perf_counter() - t0
        assert sum(r.rows for r in res.values()) == n and (a.loop_rows or loop_n == n)
        rays.append(n / ray_s)
        phases.append(phased)
        actor_rss = max(actor_rss, rss)
    rps, loop_rps = max(rays), max(loops)
    driver_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "rows": n,
        "rows_per_s": round(rps),
        "loop_rows_per_s": round(loop_rps),
        "forward_rows_per_s": round(fwd),
        "naive_rows_per_s": round(naive_rps),
        "ratio_vs_loop": round(rps / loop_rps, 3),
        "ratio_vs_forward": round(rps / fwd, 3),
        "speedup_vs_naive": round(rps / naive_rps, 2),
        "peak_rss_mb": round(max(driver_rss, actor_rss), 1),
        "driver_peak_rss_mb": round(driver_rss, 1),
        "actor_peak_rss_mb": round(actor_rss, 1),
        "ray_rows_per_s_runs": [round(x) for x in rays],
        "loop_rows_per_s_runs": [round(x) for x in loops],
        "loop_rows_measured": loop_n,
        "forward_rows_measured": min(a.forward_rows, n),
        "naive_rows_measured": min(a.naive_rows, n),
        "days": len(days),
        "model": a.model,
        "ray_seconds_best": round(n / rps, 2),
        "pool": a.pool,
        "cpus_per_actor": a.cpus_per_actor,
        "threads": a.threads,
        "batch_size": a.batch_size,
        "rows_per_unit": a.rows_per_unit,
        "shards": sum(len(r.shards) for r in res.values()),
        "build_s": round(build_s, 1),
        "ray_phases_best": phases[rays.index(rps)],
        "load_avg_1m_start": round(load_start, 2),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "note": "peak_rss_mb = max(driver, Ray actor); forward/naive (and loop when loop_rows_measured < rows) "
        "are rates on a prefix of the log",
    }
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:  # keep the build for reuse, not the (large) outputs
        shutil.rmtree(layout.root / "samples", ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
