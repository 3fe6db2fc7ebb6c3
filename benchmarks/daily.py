"""Benchmark: end-to-end wall time of the daily chain on a generated log, by step.

    python -m benchmarks.daily [--rows 1000000] [--days 3] [--users 100000] [--items 50000]
                               [--epochs 1] [--workdir DIR]

``--rows`` samples in all, spread over ``--days`` days (split: train, validation, test =
the last day, which is ``ds``). The chain is the one ``lfm4ads run`` executes
(ingest -> pretrain -> extract (+gates, aggregate, publish) -> rollover -> downstream ->
retrieval -> report), in one process with one local Ray and one Spark session. The
figure of merit is each step's share of the total: the goal is that no step other than
training and extraction takes more than 20% (extraction's share includes aggregation
and publishing, reported apart as far as the step allows).

Last stdout line: JSON with rows, total_s, steps (seconds per step), shares, goal_met.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.daily")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.days < 3:
        ap.error("--days must be >= 3 (train, validation, test)")

    from pipelines import RunConfig, run_pipeline

    root = a.workdir or Path(tempfile.mkdtemp(prefix="lfm4ads-daily-"))
    cfg = RunConfig.model_validate({
        "root": str(root),
        "source": {"kind": "generated", "generator": {
            "num_users": a.users, "num_items": a.items, "days": a.days, "rows_per_day": a.rows // a.days}},
        "split": {"valid_days": 1, "test_days": 1},
        "pretrain": {"train": {"epochs": a.epochs, "batch_size": 2048, "diagnostics_rows": 2000}},
        "extract": {"batch_size": 8192},
        "downstream": {"epochs": 3, "representations": ["user_ur", "item_ir", "user_cr", "item_cr"]},
        "retrieval": {"recall_target": 0.9},
    })
    t0 = time.perf_counter()
    st = run_pipeline(cfg)
    total = time.perf_counter() - t0
    steps = dict(st.timings)
    shares = {k: round(v / total, 3) for k, v in steps.items()}
    heavy = {"pretrain", "extract"}
    result = {
        "rows": (a.rows // a.days) * a.days,
        "days": a.days,
        "total_s": round(total, 1),
        "steps": steps,
        "shares": shares,
        "goal_met": all(s <= 0.2 for k, s in shares.items() if k not in heavy),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "root": str(root),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
