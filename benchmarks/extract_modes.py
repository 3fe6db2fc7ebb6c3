"""The extraction benchmark's other modes: a backfill of many small days in one job vs a job
per day, and the read side alone (decode per unit vs one pass per run)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.extract_data import build, build_once
from benchmarks.extract_reference import ID_COLUMNS


def backfill(a) -> None:
    """extract_days (one job) vs extract_day per day on ``a.backfill_days`` small days."""
    from datasources import log_days
    from engines import ensure_ray
    from extract import ExtractConfig, extract_day, extract_days

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-backfill-"))
    t0 = time.perf_counter()
    layout, ckpt, _ = build(work, a.rows_per_day, a.backfill_days)
    build_s = time.perf_counter() - t0
    days = log_days(layout.log)
    ensure_ray(num_cpus=os.cpu_count(), object_store_gb=1.0)
    cfg = ExtractConfig(
        batch_size=a.batch_size,
        num_cpus=a.cpus_per_actor,
        torch_threads=a.threads,
        rows_per_unit=a.rows_per_unit,
        force=True,
    )
    sample = days[: a.per_day_sample]
    t0 = time.perf_counter()
    for d in sample:
        extract_day(ckpt, layout.log, d, work / "single" / f"ds={d}", cfg)
    per_day_s = (time.perf_counter() - t0) / len(sample)
    t0 = time.perf_counter()
    res = extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, cfg)
    one_job_s = time.perf_counter() - t0
    rows = sum(r.rows for r in res.values())
    result = {
        "days": len(days),
        "rows": rows,
        "one_job_s": round(one_job_s, 2),
        "one_job_per_day_s": round(one_job_s / len(days), 3),
        "job_per_day_s": round(per_day_s, 2),
        "job_per_day_extrapolated_s": round(per_day_s * len(days), 1),
        "backfill_speedup": round(per_day_s * len(days) / one_job_s, 1),
        "rows_per_s": round(rows / one_job_s),
        "per_day_sample": len(sample),
        "build_s": round(build_s, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def decode_passes(a) -> None:
    """The read side alone (no model): each unit re-decoding its row group from row 0 (the
    job before runs) vs one pass per run (now), on the same log and units."""
    from datasources import log_days
    from engines import delta_io
    from extract.units import plan_units
    from extract.worker import open_parquet, runs_of
    from pretrain import load_checkpoint

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-decode-"))
    layout, ckpt = build_once(work, a.rows // a.days, a.days, a.model)
    spec = load_checkpoint(ckpt).manifest.dataset
    columns = list(dict.fromkeys([*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]))
    uris = [u for d in log_days(layout.log) for u in delta_io.day_file_uris(layout.log, d)]
    units, n = plan_units(uris, a.rows_per_unit)
    units = [{**u, "out": ""} for u in units]

    def per_unit() -> int:
        rows = 0
        for u in units:
            off = 0
            for rb in open_parquet(u["uri"]).iter_batches(
                batch_size=a.batch_size, row_groups=u["row_groups"], columns=columns
            ):
                off += rb.num_rows
                rows += max(0, min(off, u["stop"]) - max(off - rb.num_rows, u["start"]))
                if off >= u["stop"]:
                    break
        return rows

    def per_run() -> int:
        rows = 0
        for run in runs_of(units):
            for rb in open_parquet(run[0]["uri"]).iter_batches(
                batch_size=a.batch_size, row_groups=run[0]["row_groups"], columns=columns
            ):
                rows += rb.num_rows
        return rows

    t0 = time.perf_counter()
    assert per_run() == n
    run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert per_unit() == n
    unit_s = time.perf_counter() - t0
    md = [pq.read_metadata(u.removeprefix("file://")) for u in uris]
    print(
        json.dumps(
            {
                "rows": n,
                "files": len(uris),
                "row_groups": sum(m.num_row_groups for m in md),
                "units": len(units),
                "runs": len(runs_of(units)),
                "per_unit_decode_s": round(unit_s, 2),
                "one_pass_decode_s": round(run_s, 2),
                "decode_ratio": round(unit_s / run_s, 2),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
