"""Benchmark: foundation-model training throughput, plain PyTorch loop vs Ray Train.

Same model, same encoded data, same per-step code (``pretrain.loop``), measured in one run:

- plain_1t: one process, 1 torch thread (what one Ray worker gets by default);
- plain_mt: one process, ``--plain-threads`` torch threads (all cores; 0 skips it). On a
  busy 2-core machine torch's intra-op threads can lose badly to one thread.
  ``samples_per_s_plain`` is the better of the two: the strongest plain reference;
- ray_1w: Ray Train ``TorchTrainer``, 1 worker (1 CPU, 1 thread), the training rows
  streamed from the log's Parquet files through Ray Data (read + encode per block, seeded
  shuffle windows: ``pretrain.stream``), exactly as ``train_foundation_model`` runs;
- ray_2w: 2 workers (DDP over gloo), 1 CPU and 1 thread each, each streaming the whole log.

The plain loop trains on the same rows in the same (stream) order, already encoded in
memory, so plain_1t and ray_1w compute the same thing (equal valid AUC) and the gap is
Ray's cost. Throughput counts time inside the epoch loops (waiting for the stream
included; validation and checkpointing excluded); start-up (trainer + workers until the
first epoch starts, plus validation and checkpoints) is reported separately as
``startup_s_*`` = wall - training time. ``*_steady`` counts epochs after the first only
(the first also pays the Ray Data worker processes' start-up).

Sharded reads: each Ray worker reads and decodes only its shard of an epoch
(``pretrain.stream``); ``rows_read_per_worker_ray_1w`` / ``_ray_2w`` are the rows each
worker decoded in the last epoch, and ``rows_read_ratio_2w_over_1w`` the busiest 2-worker
figure over the 1-worker one (target 0.5: division, not multiplication; row-group
granularity can add a little).

    python -m benchmarks.train [--rows 100000] [--epochs 2] [--plain-threads 2] [--batch-size 512] [--ray-niceness 0]
    python -m benchmarks.train --memory [--memory-rows 200000 2000000]
    python -m benchmarks.train --gpu [--rows ...]     # the same, training on CUDA (use_gpu, bf16 AMP)

Last stdout line: JSON with rows, samples_per_s_plain, samples_per_s_ray_1w,
samples_per_s_ray_2w, ratio_ray_best_over_plain (all epochs) and
ratio_ray_best_over_plain_steady, wall_s_*, startup_s_*, valid_auc_*, rows_read_*.

``--memory`` generates a log at each of two sizes (ten times apart) and, in a fresh process
per size, prepares training the way ``train_foundation_model`` does before any worker
starts: the distributed vocabulary count (every row validated in Ray tasks), the file plan
and the shard ranges. Last line: JSON with ``driver_peak_rss_mb_small``,
``driver_peak_rss_mb_large`` and ``driver_rss_ratio`` (large over small; target <= 1.2),
and the same for the in-memory reference the driver used before (read the training table,
fit, encode: ``*_inmemory``) unless ``--no-reference``.
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
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _prepare_child(log: str, mode: str, workers: int) -> None:
    """One fresh driver process: prepare training on every day but the last; print JSON."""
    from datasources import log_days

    days = log_days(log)[:-1]
    base = _peak_rss_mb()
    t = time.perf_counter()
    if mode == "streaming":
        from engines import ensure_ray
        from pretrain import PretrainConfig
        from pretrain.train import prepare_training

        ensure_ray(num_cpus=2, object_store_gb=0.5)
        base = _peak_rss_mb()  # after ray.init: Ray's own driver-side cost is the same at any size
        t = time.perf_counter()
        enc, plan, shards = prepare_training(
            log, days, PretrainConfig().train.model_copy(update={"num_workers": workers})
        )
        rows = plan.total_rows
    else:  # the in-memory path the driver used before: read, fit, encode the whole training table
        from datasources import read_log, read_log_spec
        from pretrain import FeatureEncoder

        tbl = read_log(log, days)
        enc = FeatureEncoder.fit(tbl, read_log_spec(log))
        enc.encode(tbl)
        rows = tbl.num_rows
    print(
        json.dumps(
            {
                "rows": rows,
                "peak_rss_mb": round(_peak_rss_mb(), 1),
                "rss_before_mb": round(base, 1),
                "seconds": round(time.perf_counter() - t, 2),
                "vocab_sizes": enc.vocab_sizes,
            }
        ),
        flush=True,
    )


def _memory(args: argparse.Namespace) -> None:
    from datasources import GeneratorConfig, generate_log

    work = Path(tempfile.mkdtemp(prefix="bench_train_mem_"))
    out: dict[str, object] = {"rows_small": args.memory_rows[0], "rows_large": args.memory_rows[1]}
    try:
        for label, rows in zip(("small", "large"), args.memory_rows):
            log = work / f"log_{label}"
            t = time.perf_counter()
            # same population at both sizes: only the row count grows (vocabulary bounded)
            generate_log(GeneratorConfig(days=args.days + 1, rows_per_day=max(1, rows // args.days), seed=0), log)
            print(f"{label}: generated {rows} rows in {time.perf_counter() - t:.1f}s", flush=True)
            modes = ["streaming"] + ([] if args.no_reference else ["inmemory"])
            for mode in modes:
                res = subprocess.run(
                    [sys.executable, "-m", "benchmarks.train", "--_prepare", str(log), mode],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if res.returncode != 0:
                    raise RuntimeError(f"{mode} prepare at {rows} rows failed:\n{res.stderr[-3000:]}")
                got = json.loads(res.stdout.strip().splitlines()[-1])
                suffix = "" if mode == "streaming" else "_inmemory"
                out[f"driver_peak_rss_mb_{label}{suffix}"] = got["peak_rss_mb"]
                out[f"prepare_s_{label}{suffix}"] = got["seconds"]
                out[f"train_rows_{label}"] = got["rows"]
                print(f"{label} {mode}: {got}", flush=True)
            shutil.rmtree(log, ignore_errors=True)
        for suffix in ("", "_inmemory"):
            if f"driver_peak_rss_mb_large{suffix}" in out:
                out[f"driver_rss_ratio{suffix}"] = round(
                    out[f"driver_peak_rss_mb_large{suffix}"] / out[f"driver_peak_rss_mb_small{suffix}"], 3
                )
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--_prepare":
        _prepare_child(sys.argv[2], sys.argv[3], 2)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rows", type=int, default=100_000, help="training rows (one more day is generated for validation)"
    )
    ap.add_argument("--days", type=int, default=4, help="training days the rows are spread over")
    ap.add_argument("--epochs", type=int, default=2, help=">= 2 to also get the *_steady numbers")
    ap.add_argument("--plain-threads", type=int, default=os.cpu_count() or 2, help="threads of plain_mt; 0 skips it")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--skip", nargs="*", default=[], choices=["plain", "ray_1w", "ray_2w"])
    ap.add_argument(
        "--ray-niceness",
        type=int,
        default=0,
        help="niceness of Ray's worker processes (Ray's own default is 15; 0 = the plain loop's)",
    )
    ap.add_argument("--memory", action="store_true", help="driver peak RSS of preparing training at two log sizes")
    ap.add_argument("--memory-rows", type=int, nargs=2, default=[200_000, 2_000_000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--no-reference", action="store_true", help="--memory: skip the in-memory reference")
    ap.add_argument("--gpu", action="store_true", help="train on CUDA (use_gpu, bf16 AMP); fails without a GPU")
    args = ap.parse_args()
    if args.memory:
        _memory(args)
        return

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts its worker processes (the Train workers included) at nice 15: on a busy
    # machine they then lose the CPU to every normal process and the comparison measures
    # the scheduler, not Ray. The raylet reads this from its environment at ray.init.
    os.environ["RAY_worker_niceness"] = str(args.ray_niceness)
    from datasources import GeneratorConfig, generate_log, log_days, read_log, read_log_spec
    from engines import ensure_ray
    from pretrain import FeatureEncoder, PretrainConfig
    from pretrain.data import to_arrays
    from pretrain.ray_fit import fit_with_ray_train
    from pretrain.replica import fit_plain
    from pretrain.stream import log_files_for_days, read_in_stream_order

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        per_day = max(1, args.rows // args.days)
        gen = GeneratorConfig(days=args.days + 1, rows_per_day=per_day, seed=0)
        t0 = time.perf_counter()
        spec = generate_log(gen, work / "log")
        days = log_days(work / "log")
        spec = read_log_spec(work / "log")
        files = log_files_for_days(work / "log", days[:-1])
        tr, va = read_in_stream_order(files), read_log(work / "log", days[-1:])
        enc = FeatureEncoder.fit(tr, spec)
        train_arr, valid_arr = to_arrays(enc.encode(tr)), to_arrays(enc.encode(va))
        print(
            f"data: {tr.num_rows} train rows, {va.num_rows} valid rows, built in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

        def cfg(workers: int, threads: int = 1):
            return PretrainConfig.model_validate(
                {
                    "train": {
                        "epochs": args.epochs,
                        "batch_size": args.batch_size,
                        "patience": args.epochs,
                        "num_workers": workers,
                        "cpus_per_worker": 1,
                        "torch_threads": threads,
                        "diagnostics": False,
                        "use_gpu": args.gpu,
                        "amp": "bf16" if args.gpu else "off",
                    }
                }
            )

        out: dict[str, float | int] = {
            "rows": tr.num_rows,
            "epochs": args.epochs,
            "plain_threads": args.plain_threads,
            "batch_size": args.batch_size,
            "ray_niceness": args.ray_niceness,
        }

        def record(name: str, state: dict, wall: float) -> None:
            train_s = sum(h["seconds"] for h in state["history"])
            samples = sum(h["samples"] for h in state["history"])
            out[f"samples_per_s_{name}"] = round(samples / train_s, 1)
            out[f"wall_s_{name}"] = round(wall, 2)
            out[f"startup_s_{name}"] = round(wall - train_s, 2)
            out[f"valid_auc_{name}"] = round(float(state["history"][-1]["valid_auc"]), 4)
            out[f"rows_read_per_worker_{name}"] = state["history"][-1].get("rows_read_per_worker")
            later = state["history"][1:]
            if later:
                out[f"samples_per_s_{name}_steady"] = round(
                    sum(h["samples"] for h in later) / sum(h["seconds"] for h in later), 1
                )
            print(
                f"{name}: {out[f'samples_per_s_{name}']} samples/s "
                f"(epochs {[round(h['samples'] / h['seconds']) for h in state['history']]}), wall {wall:.1f}s, "
                f"outside training {wall - train_s:.1f}s",
                flush=True,
            )

        if "plain" not in args.skip:
            runs = [("plain_1t", 1)] + ([("plain_mt", args.plain_threads)] if args.plain_threads > 0 else [])
            for name, threads in runs:
                c = cfg(1, threads)
                t = time.perf_counter()
                st = fit_plain(c.model, c.train, spec, enc.vocab_sizes, train_arr, valid_arr)
                record(name, st, time.perf_counter() - t)
            out["samples_per_s_plain"] = max(out[f"samples_per_s_{n}"] for n, _ in runs)
            if all(f"samples_per_s_{n}_steady" in out for n, _ in runs):
                out["samples_per_s_plain_steady"] = max(out[f"samples_per_s_{n}_steady"] for n, _ in runs)
        t = time.perf_counter()
        ensure_ray(num_cpus=max(2, os.cpu_count() or 2), object_store_gb=1.0)
        out["ray_init_s"] = round(time.perf_counter() - t, 2)
        for name, workers in (("ray_1w", 1), ("ray_2w", 2)):
            if name in args.skip:
                continue
            c = cfg(workers)
            t = time.perf_counter()
            st = fit_with_ray_train(c.model, c.train, spec, enc, files, valid_arr, work / "runs" / name)
            record(name, st, time.perf_counter() - t)
        r1, r2 = out.get("rows_read_per_worker_ray_1w"), out.get("rows_read_per_worker_ray_2w")
        if r1 and r2:
            out["rows_read_ratio_2w_over_1w"] = round(max(r2) / max(r1), 3)
        rays = [out[k] for k in ("samples_per_s_ray_1w", "samples_per_s_ray_2w") if k in out]
        if rays and "samples_per_s_plain" in out:
            out["ratio_ray_best_over_plain"] = round(max(rays) / out["samples_per_s_plain"], 3)
        steady = [out[k] for k in ("samples_per_s_ray_1w_steady", "samples_per_s_ray_2w_steady") if k in out]
        if steady and "samples_per_s_plain_steady" in out:
            out["ratio_ray_best_over_plain_steady"] = round(max(steady) / out["samples_per_s_plain_steady"], 3)
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
