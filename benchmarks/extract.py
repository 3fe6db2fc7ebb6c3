"""Benchmark: sample-level representation extraction, four ways, one generated log + checkpoint.

- forward: the model alone over pre-encoded tensors (all cores): the compute limit;
- loop: one process reads the day's Parquet, encodes, runs the model, writes Parquet (all cores);
- naive: a torch DataLoader over a pandas frame with per-row indexing (as the public
  LFM4Ads code does), measured on a slice of the rows;
- ray: ``extract.extract_day`` (Ray Data actor pool), Ray start-up excluded, actor start
  (checkpoint load) included.

    python -m benchmarks.extract [--rows 300000] [--batch-size 4096] [--pool 1] [--cpus-per-actor 2]

Backfill mode (many small days, e.g. MovieLens-100K's ~215 days of ~500 rows):
``extract.extract_days`` over all days in ONE Ray Data job vs ``extract_day`` per day
(one job each, timed on the first ``--per-day-sample`` days and extrapolated):

    python -m benchmarks.extract --backfill-days 200 --rows-per-day 500

The checkpoint is a default-size model with random weights: throughput does not depend on
training. Last stdout line: JSON with rows, rows_per_s, loop_rows_per_s, forward_rows_per_s,
naive_rows_per_s, ratio_vs_loop, ratio_vs_forward, speedup_vs_naive, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

LAYERS_EXTRA = ["user_tower", "item_tower"]
THREADS = os.cpu_count()


def build(work: Path, rows: int, days: int = 1):
    from contracts import CheckpointManifest, RunLayout
    from datasources import GeneratorConfig, generate_log, read_log
    from pretrain import FeatureEncoder, FoundationModel, ModelConfig
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(work)
    gen = GeneratorConfig(days=days, rows_per_day=rows, start_date=date(2026, 1, 1))
    spec = generate_log(gen, layout.log)
    sample = read_log(layout.log, columns=spec.categorical_columns)
    encoder = FeatureEncoder.fit(sample, spec, 1, None)
    mcfg = ModelConfig()
    torch.manual_seed(0)
    model = FoundationModel(mcfg, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version="bench", created_at=datetime.now(timezone.utc), dataset=spec.canonical(),
        model_config_data=mcfg.model_dump(mode="json"), config_hash="bench", data_version="bench",
        vocab_sizes=encoder.vocab_sizes, layers=model.layer_infos(), default_cr_layer=model.default_cr_layer,
    )
    return layout, save_checkpoint(layout.checkpoints, model, encoder, manifest), "2026-01-01"


def fixed(x: torch.Tensor) -> pa.Array:
    a = x.float().numpy()
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def plain_loop(ckpt: Path, uris: list[str], out: Path, batch: int) -> int:
    """What a user writes by hand: read, encode, forward, write, one process, all cores."""
    from pretrain import load_checkpoint

    torch.set_num_threads(THREADS)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for k, uri in enumerate(uris):
        writer = None
        for rb in pq.ParquetFile(uri).iter_batches(batch_size=batch):
            t = pa.Table.from_batches([rb])
            with torch.inference_mode():
                reps = lm.model.representations(lm.encoder.encode(t, require_labels=False), layers)
            o = pa.table({"user_id": t["user_id"], "item_id": t["item_id"], "event_time": t["event_time"],
                          "ur": fixed(reps[layers[0]]), "ir": fixed(reps[layers[1]]), "cr": fixed(reps[layers[2]])})
            writer = writer or pq.ParquetWriter(out / f"part-{k}.parquet", o.schema)
            writer.write_table(o)
            rows += o.num_rows
        if writer:
            writer.close()
    return rows


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
            lm.model.representations({k: v[s:s + batch] for k, v in enc.items()}, layers)
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
    cfg = ExtractConfig(batch_size=a.batch_size, num_cpus=a.cpus_per_actor, torch_threads=a.threads,
                        rows_per_unit=a.rows_per_unit, force=True)
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
        "days": len(days), "rows": rows, "one_job_s": round(one_job_s, 2),
        "one_job_per_day_s": round(one_job_s / len(days), 3), "job_per_day_s": round(per_day_s, 2),
        "job_per_day_extrapolated_s": round(per_day_s * len(days), 1),
        "backfill_speedup": round(per_day_s * len(days) / one_job_s, 1), "rows_per_s": round(rows / one_job_s),
        "per_day_sample": len(sample), "build_s": round(build_s, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--naive-rows", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--pool", type=int, default=1)
    p.add_argument("--cpus-per-actor", type=float, default=float(os.cpu_count()))
    p.add_argument("--rows-per-unit", type=int, default=65536)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of every variant")
    p.add_argument("--workdir", default=None)
    p.add_argument("--backfill-days", type=int, default=0, help="> 0: the backfill comparison instead")
    p.add_argument("--rows-per-day", type=int, default=500)
    p.add_argument("--per-day-sample", type=int, default=5)
    a = p.parse_args()
    global THREADS
    THREADS = a.threads
    if a.backfill_days:
        return backfill(a)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-extract-"))
    layout, ckpt, ds = build(work, a.rows)

    from engines import delta_io, ensure_ray
    from extract import ExtractConfig, extract_day

    uris = delta_io.day_file_uris(layout.log, ds)
    table = pa.concat_tables([pq.read_table(u) for u in uris])
    n = table.num_rows
    fwd = forward_only(ckpt, table, a.batch_size)
    naive_rps = naive(ckpt, table.slice(0, min(a.naive_rows, n)), a.batch_size)
    del table
    t0 = time.perf_counter()
    loop_n = plain_loop(ckpt, uris, work / "loop", a.batch_size)
    loop_rps = loop_n / (time.perf_counter() - t0)

    ensure_ray(num_cpus=os.cpu_count(), object_store_gb=1.0)
    cfg = ExtractConfig(batch_size=a.batch_size, actor_pool_size=a.pool, num_cpus=a.cpus_per_actor,
                        torch_threads=max(1, a.threads // a.pool),
                        rows_per_unit=a.rows_per_unit, force=True)
    t0 = time.perf_counter()
    res = extract_day(ckpt, layout.log, ds, layout.samples(ds), cfg)
    ray_s = time.perf_counter() - t0
    assert res.rows == n == loop_n
    rps = n / ray_s
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "rows": n, "rows_per_s": round(rps), "loop_rows_per_s": round(loop_rps),
        "forward_rows_per_s": round(fwd), "naive_rows_per_s": round(naive_rps),
        "ratio_vs_loop": round(rps / loop_rps, 3), "ratio_vs_forward": round(rps / fwd, 3),
        "speedup_vs_naive": round(rps / naive_rps, 2), "peak_rss_mb": round(rss, 1),
        "ray_seconds": round(ray_s, 2), "pool": a.pool, "cpus_per_actor": a.cpus_per_actor,
        "shards": len(res.shards), "threads": a.threads, "load_avg_1m": round(os.getloadavg()[0], 2), "note": "peak_rss_mb: the driver process (Ray workers are separate)",
    }
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
