"""Kill points: the one explicit hook the fault tests use to SIGKILL a real run midway.

``fault_point(name)`` is called at each place where a crash must leave nothing half
published (every step boundary of the daily chain, and inside steps: samples extracted,
a partition's files written but not committed, a table committed with the day's others
not yet, an index built but not live, a model trained but its checkpoint not saved).
Unset ``$LFM4ADS_KILL_AT`` (production): it returns at once. Set to ``POINT`` or
``POINT:N``, the process SIGKILLs itself the N-th time (default 1st) it reaches POINT:
no handler, ``finally`` or ``atexit`` runs, as when the machine dies. The points live in
engines/ (the earliest layer) because pretrain, extract, retrieval and pipelines all call
it; tests/pipelines/test_faults.py and ``python -m benchmarks.faults`` drive it.
"""

from __future__ import annotations

import os
import signal
import sys

KILL_ENV = "LFM4ADS_KILL_AT"

# The daily chain's steps (pipelines.steps.STEPS, checked by tests/pipelines/test_faults.py):
# "before:S" is reached just before step S runs (the ledger already says running), "after:S"
# when its work is done but the ledger not yet told.
CHAIN_STEPS = ("ingest", "pretrain", "extract", "rollover", "downstream", "retrieval", "report")

IN_STEP_POINTS = (
    "extract:after-samples",  # today's samples extracted (pipelines/step_extract.py), nothing published
    "delta:staged",  # engines/delta_io.commit_files: a partition's Parquet files written, not committed
    "extract:committed",  # extract/aggregate.py: right after one table's commit, the day's others pending
    "retrieval:before-current",  # retrieval/build.py: index version folder complete, CURRENT not moved
    "pretrain:before-save",  # pretrain/train.py: training finished, checkpoint not written
)

FAULT_POINTS = tuple(f"{when}:{step}" for step in CHAIN_STEPS for when in ("before", "after")) + IN_STEP_POINTS

_reached: dict[str, int] = {}  # times this process reached the armed point


def parse_kill_at(value: str) -> tuple[str, int]:
    """``"POINT"`` or ``"POINT:N"`` -> (point, N); an unknown point is a ValueError naming the valid ones."""
    point, _, count = value.rpartition(":")
    if not (count.isdigit() and point):
        point, count = value, "1"
    if point not in FAULT_POINTS or int(count) < 1:
        raise ValueError(
            f"${KILL_ENV}={value!r}: not a kill point; give POINT or POINT:N (N >= 1) with POINT one of "
            + ", ".join(FAULT_POINTS)
        )
    return point, int(count)


def fault_point(name: str) -> None:
    """SIGKILL this process here if ``$LFM4ADS_KILL_AT`` arms ``name`` (see the module doc)."""
    value = os.environ.get(KILL_ENV)
    if not value:
        return
    if name not in FAULT_POINTS:  # a call site with a name nobody can arm: a bug of the caller
        raise ValueError(f"fault_point({name!r}): not one of {FAULT_POINTS}")
    point, nth = parse_kill_at(value)
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == nth:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
