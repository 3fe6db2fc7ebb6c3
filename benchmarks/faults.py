"""Fault injection for the daily job, every case: kill it, corrupt its input, feed it a bad day, run it twice.

    python -m benchmarks.faults [--rows-per-day 1500] [--users 300] [--items 150] [--workdir DIR]
                                [--only CASE[,CASE...]] [--jobs 2] [--keep] [--reuse-clean]

A thin wrapper around the cases of tests/pipelines/fault_cases.py (the test module
tests/pipelines/test_faults.py runs a few of them, smaller, in the test suite): every run
is a real ``lfm4ads run`` in its own process (the CLI, so exit codes are the product's), on
a tiny generated log of 5 days (train 2, validation 1, test 2), 1 epoch. A kill is a
SIGKILL the process delivers to itself at an explicit kill point of the product
(engines.fault_points, armed by ``$LFM4ADS_KILL_AT``); nothing is patched. Reference: a
clean run of yesterday then today, each case on its own copy of a run root.

Cases run in two lanes at once (``--jobs 2``, the default): the kill chain in one, the
other cases in the other, each on its own root (``--jobs 1``: one after another). Most
of a run is Spark/Ray start-up and per-job latency, which leave the second core idle.

Last stdout line: JSON with cases, passed, rows_lost, rows_duplicated, bad_publishes,
total_s, wall seconds per case (``case_s``; overlapping in lanes) and failed cases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

# the cases live with the tests (run from the repository root, as every benchmark is)
from tests.pipelines.fault_cases import CASES, FaultSuite
from tests.pipelines.faults_support import Harness, base_config


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.faults")
    ap.add_argument("--rows-per-day", type=int, default=1500)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=150)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--only", default="", help="Comma-separated case names (default: all).")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        choices=(1, 2),
        help="2 (default): the kill chain runs in one lane while the other cases run in a "
        "second, at the same time (each case on its own root); 1: every case in turn.",
    )
    ap.add_argument(
        "--reuse-clean",
        action="store_true",
        help="Reuse the clean runs a kept --workdir holds (for reruns of single cases).",
    )
    a = ap.parse_args(argv)
    a.only = set(filter(None, a.only.split(",")))
    if a.only - set(CASES):
        ap.error(f"--only: unknown case(s) {sorted(a.only - set(CASES))}; cases are {list(CASES)}")
    return a


def main(argv: list[str] | None = None) -> dict:
    a = _args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = (a.workdir or Path(tempfile.mkdtemp(prefix="lfm4ads-faults-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    events: list[dict] = []
    suite = FaultSuite(Harness(work, base_config(a.rows_per_day, a.users, a.items), events))
    selected = [c for c in CASES if not a.only or c in a.only]
    t0 = time.perf_counter()
    case_s: dict[str, float] = {}  # wall seconds per case (in lanes they overlap)

    reuse = a.reuse_clean and (work / "clean.done").is_file()
    if reuse:
        for case in selected:
            shutil.rmtree(work / case, ignore_errors=True)
        suite.load_yesterday()
    else:
        for old in work.iterdir():  # only what an earlier run of this harness made
            if old.is_dir() and old.name in ("clean", "after_yesterday", *CASES):
                shutil.rmtree(old)
            elif old.is_file() and old.suffix in (".log", ".yaml", ".done"):
                old.unlink()
        t1 = time.perf_counter()
        suite.clean_yesterday()
        case_s["clean"] = round(time.perf_counter() - t1, 1)

    def clean_today() -> None:
        if reuse:
            suite.load_today()
            return
        t1 = time.perf_counter()
        suite.clean_today()
        case_s["clean"] = round(case_s.get("clean", 0.0) + time.perf_counter() - t1, 1)

    def timed(case: str) -> None:
        t1 = time.perf_counter()
        getattr(suite, case)()
        case_s[case] = round(time.perf_counter() - t1, 1)

    lane_b = [c for c in selected if c != "kill_chain"]
    if a.jobs == 1 or "kill_chain" not in selected or not lane_b:
        clean_today()
        for case in selected:
            timed(case)
    else:
        # Two lanes, each case on its own root: the kill chain (about half the runs) here,
        # the other cases in a thread; kill_pretrain needs only the log, so it overlaps
        # the clean run of today, the others wait for that reference.
        ready, abort, errors = threading.Event(), threading.Event(), []

        def lane() -> None:
            try:
                for case in lane_b:
                    if case != "kill_pretrain":
                        ready.wait()
                    if abort.is_set():
                        return
                    timed(case)
            except BaseException as e:  # re-raised by the main thread
                errors.append(e)

        worker = threading.Thread(target=lane, name="faults-lane-b")
        worker.start()
        try:
            try:
                clean_today()
            finally:
                if not suite.want:
                    abort.set()
                ready.set()
            timed("kill_chain")
        finally:
            worker.join()
        if errors:
            raise errors[0]

    results = suite.results
    out = {
        "cases": len(results),
        "passed": sum(r["passed"] for r in results.values()),
        "rows_lost": sum(r["rows_lost"] for r in results.values()),
        "rows_duplicated": sum(r["rows_duplicated"] for r in results.values()),
        "bad_publishes": sum(r["bad_publishes"] for r in results.values()),
        "total_s": round(time.perf_counter() - t0, 1),
        "rows_per_day": a.rows_per_day,
        "failed": {k: v["problems"] for k, v in results.items() if not v["passed"]},
        "runs": len(events),
        "jobs": a.jobs,
        "case_s": case_s,
        "workdir": str(work) if a.keep else None,
    }
    if not a.keep and a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
