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
``ExtractResult.phases``: start-up, actor constructor, busy time, finalise, actor niceness).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

if __name__ == "__main__" and "OMP_NUM_THREADS" not in os.environ:
    # Ray gives each actor OMP_NUM_THREADS = its CPUs; the in-process variants get the same
    # OpenMP set-up (set before torch loads). Measured at load ~20: 2 torch threads ran at
    # 1.4k rows/s without it, 2.4k with it (forward pass, same process otherwise).
    _argv = sys.argv[1:]
    os.environ["OMP_NUM_THREADS"] = _argv[_argv.index("--threads") + 1] if "--threads" in _argv else str(os.cpu_count())

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

LAYERS_EXTRA = ["user_tower", "item_tower"]
THREADS = os.cpu_count()
ID_COLUMNS = ["user_id", "item_id", "event_time", "scenario", "sample_type"]
MODELS = {
    "default": {},
    # a much cheaper model: the pipeline's own costs (decode, write, health, Ray) weigh more
    "small": {
        "d_model": 8,
        "num_heads": 1,
        "user_layers": 1,
        "embed_dim": 8,
        "ur_dim": 16,
        "ir_dim": 16,
        "item_hidden": 16,
        "cross_layers": 1,
        "mlp_dims": [32, 16],
    },
}


def build(work: Path, rows: int, days: int = 1, model: str = "default"):
    """Generated log of ``days`` days x ``rows`` rows each and a random-weight checkpoint."""
    from contracts import CheckpointManifest, RunLayout
    from datasources import GeneratorConfig, generate_log, read_log
    from pretrain import FeatureEncoder, FoundationModel, ModelConfig
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(work)
    gen = GeneratorConfig(days=days, rows_per_day=rows, start_date=date(2026, 1, 1))
    spec = generate_log(gen, layout.log)
    sample = read_log(layout.log, columns=spec.categorical_columns)
    encoder = FeatureEncoder.fit(sample, spec, 1, None)
    del sample
    mcfg = ModelConfig(**MODELS[model])
    torch.manual_seed(0)
    fm = FoundationModel(mcfg, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version="bench",
        created_at=datetime.now(timezone.utc),
        dataset=spec.canonical(),
        model_config_data=mcfg.model_dump(mode="json"),
        config_hash="bench",
        data_version="bench",
        vocab_sizes=encoder.vocab_sizes,
        layers=fm.layer_infos(),
        default_cr_layer=fm.default_cr_layer,
    )
    return layout, save_checkpoint(layout.checkpoints, fm, encoder, manifest), "2026-01-01"


def build_once(work: Path, rows_per_day: int, days: int, model: str):
    """Build in a child process (its memory never counts in this process's peak RSS) unless
    ``work`` already holds a build of the same shape (``--workdir`` reuse)."""
    from contracts import RunLayout

    tag = {"rows_per_day": rows_per_day, "days": days, "model": model}
    stamp = work / "bench-build.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == tag):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.extract",
                "--build-only",
                "--workdir",
                str(work),
                "--rows",
                str(rows_per_day * days),
                "--days",
                str(days),
                "--model",
                model,
            ],
            check=True,
        )
    layout = RunLayout(work)
    ckpt = next(p for p in sorted(layout.checkpoints.iterdir()) if (p / "manifest.json").is_file())
    return layout, ckpt


def fixed(x: torch.Tensor) -> pa.Array:
    a = x.float().numpy()
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def plain_loop(ckpt: Path, uris: list[str], out: Path, batch: int, max_rows: int = 0) -> int:
    """What a user writes by hand: read, encode, forward, write, one process, all cores.

    Same I/O as the job: the columns the model needs are read, the same output columns
    (ids, ur, ir, cr, layer) written, one Parquet file per input file. ``max_rows`` > 0
    stops after that many rows (the 10M-row run measures the loop on a prefix).
    """
    from pretrain import load_checkpoint

    torch.set_num_threads(THREADS)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    spec = lm.manifest.dataset
    columns = list(dict.fromkeys([*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = 0
    for k, uri in enumerate(uris):
        writer = None
        for rb in pq.ParquetFile(uri.removeprefix("file://")).iter_batches(batch_size=batch, columns=columns):
            t = pa.Table.from_batches([rb])
            with torch.inference_mode():
                reps = lm.model.representations(lm.encoder.encode(t, require_labels=False), layers)
            o = pa.table(
                {
                    **{c: t[c] for c in ID_COLUMNS},
                    "ur": fixed(reps[layers[0]]),
                    "ir": fixed(reps[layers[1]]),
                    "cr": fixed(reps[layers[2]]),
                    "layer": pa.array([layers[2]] * t.num_rows, pa.string()),
                }
            )
            writer = writer or pq.ParquetWriter(out / f"part-{k}.parquet", o.schema)
            writer.write_table(o)
            rows += o.num_rows
            if max_rows and rows >= max_rows:
                break
        if writer:
            writer.close()
        if max_rows and rows >= max_rows:
            break
    return rows


def _head(uris: list[str], n: int) -> pa.Table:
    parts, got = [], 0
    for u in uris:
        for rb in pq.ParquetFile(u.removeprefix("file://")).iter_batches(batch_size=65536):
            parts.append(rb.slice(0, n - got))
            got += parts[-1].num_rows
            if got >= n:
                return pa.Table.from_batches(parts)
    return pa.Table.from_batches(parts)


def forward_only(ckpt: Path, table: pa.Table, batch: int) -> float:
    from pretrain import load_checkpoint

    torch.set_num_threads(THREADS)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    enc = lm.encoder.encode(table, require_labels=False)
    n = table.num_rows
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch):
            lm.model.representations({k: v[s : s + batch] for k, v in enc.items()}, layers)
    return n / (time.perf_counter() - t0)


def naive(ckpt: Path, table: pa.Table, batch: int) -> float:
    """DataLoader over a pandas frame, one ``df.iloc[i]`` per sample, default collate."""
    from torch.utils.data import DataLoader, Dataset

    from pretrain import load_checkpoint

    torch.set_num_threads(THREADS)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    enc = lm.encoder.encode(table, require_labels=False)
    frame = {k: (list(v.numpy()) if v.ndim > 1 else v.numpy()) for k, v in enc.items()}
    import pandas as pd

    df = pd.DataFrame(frame)

    class Rows(Dataset):
        def __len__(self):
            return len(df)

        def __getitem__(self, i):
            r = df.iloc[i]
            return {k: torch.as_tensor(np.asarray(r[k])) for k in df.columns}

    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in DataLoader(Rows(), batch_size=batch, shuffle=False):
            lm.model.representations(b, layers)
    return len(df) / (time.perf_counter() - t0)


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
    from extract.job import plan_units
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
    global THREADS
    THREADS = a.threads
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

    from datasources import log_days
    from engines import delta_io, ensure_ray
    from extract import ExtractConfig, extract_days

    days = log_days(layout.log)
    uris = [u for d in days for u in delta_io.day_file_uris(layout.log, d)]
    n = sum(pq.read_metadata(u.removeprefix("file://")).num_rows for u in uris)
    head = _head(uris, min(max(a.forward_rows, a.naive_rows), n))
    fwd = forward_only(ckpt, head.slice(0, min(a.forward_rows, n)), a.batch_size)
    naive_rps = naive(ckpt, head.slice(0, min(a.naive_rows, n)), a.batch_size)
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
        loop_n = plain_loop(ckpt, uris, work / "loop", a.batch_size, a.loop_rows)
        loops.append(loop_n / (time.perf_counter() - t0))
        shutil.rmtree(work / "loop", ignore_errors=True)  # disk: the loop's output is not kept
        t0 = time.perf_counter()
        res = extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, cfg)
        ray_s = time.perf_counter() - t0
        assert sum(r.rows for r in res.values()) == n and (a.loop_rows or loop_n == n)
        rays.append(n / ray_s)
        phases.append(next(iter(res.values())).phases)
        actor_rss = max(actor_rss, max(r.worker_peak_rss_mb for r in res.values()))
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
