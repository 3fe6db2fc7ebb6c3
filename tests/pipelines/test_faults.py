"""Kill points (engines.fault_points) and a few fault cases of tests/pipelines/fault_cases.py.

The hook's own tests are fast. The slow ones run real ``lfm4ads`` processes: one killed by
SIGKILL inside the retrieval step (index built, not live), then a rerun that must publish
exactly what a clean run publishes; and a truncated log file (exit 5, naming the file,
nothing published). The reference runs in this process on the session's engines, from an
untrained checkpoint, and the killed run starts after extraction, so no process of this
module starts Spark, Ray or training: the suite's wall time stays down. Every case at
every kill point (inside extraction too): ``python -m benchmarks.faults`` (docs/pipelines.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engines import fault_points
from engines.fault_points import FAULT_POINTS, KILL_ENV, fault_point, parse_kill_at
from tests.pipelines.fault_cases import FaultSuite
from tests.pipelines.faults_support import TODAY, Harness, base_config
from tests.pipelines.helpers import untrained_checkpoint

# A small log (the gates and the index's recall target still pass on it). Publishing is
# most of the module's time: snapshots only on the split edges' eves and on today (3 of 5
# days), validated and committed through Arrow rather than Spark jobs (50 s -> 19 s here).
# Only the in-process reference publishes (the killed run starts after extraction), so the
# write path changes no assertion; every write path has its own tests in tests/extract/.
SMALL = {"rows_per_day": 500, "users": 150, "items": 80}
CHEAP_PUBLISHING = {"publish_every": 5, "aggregate": {"write_path": "arrow"}}


def test_kill_points_cover_every_step_of_the_chain():
    from pipelines import STEPS

    assert fault_points.CHAIN_STEPS == tuple(STEPS)
    assert {"before:report", "after:extract", "delta:staged", "retrieval:before-current"} <= set(FAULT_POINTS)


def test_kill_at_names_a_point_and_the_how_many_th_time():
    assert parse_kill_at("after:extract") == ("after:extract", 1)
    assert parse_kill_at("delta:staged:2") == ("delta:staged", 2)
    for bad in ("after:extrakt", "delta:staged:0", "extract", ""):
        with pytest.raises(ValueError, match="retrieval:before-current"):  # the error lists the valid points
            parse_kill_at(bad)


def test_unarmed_points_do_nothing_and_a_misspelt_one_is_an_error(monkeypatch):
    monkeypatch.delenv(KILL_ENV, raising=False)
    fault_point("after:ingest")
    monkeypatch.setenv(KILL_ENV, "extract:committed")
    fault_point("after:ingest")  # armed elsewhere: passes
    monkeypatch.setenv(KILL_ENV, "after:ingets")
    with pytest.raises(ValueError, match=KILL_ENV):
        fault_point("after:ingest")


def test_an_armed_point_kills_the_process_the_nth_time_it_is_reached():
    code = (
        "from engines.fault_points import fault_point\n"
        "for i in range(3):\n"
        "    fault_point('delta:staged')\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, KILL_ENV: "delta:staged:2"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == -signal.SIGKILL and proc.stdout.split() == ["0"], proc.stderr


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> FaultSuite:
    """The cases' starting root: the log and an untrained checkpoint, nothing run yet (the
    benchmark's: yesterday done). No reference yet (see :func:`reference`)."""
    from pipelines import RunConfig

    work = tmp_path_factory.mktemp("faults")
    base = {**base_config(**SMALL), **CHEAP_PUBLISHING}
    suite = FaultSuite(Harness(work, base, [], echo=False), echo=False)
    untrained_checkpoint(RunConfig.model_validate({**base, "root": str(suite.after_yesterday)}), "v-faults")
    suite.load_yesterday()
    return suite


@pytest.fixture(scope="module")
def reference(suite, ray_cluster, spark) -> FaultSuite:
    """``suite`` with its reference: one clean run of today, in this process on the session's
    engines; the root as it was when today's tables were published is kept as
    ``today_extracted`` (a killed run resumed from there starts neither Spark nor Ray)."""
    import shutil

    from pipelines import RunConfig, run_pipeline

    shutil.copytree(suite.after_yesterday, suite.clean, symlinks=True)
    cfg = RunConfig.model_validate({**suite.h.base_cfg, "root": str(suite.clean), "ds": TODAY})
    run_pipeline(cfg, steps=["extract", "rollover"])
    shutil.copytree(suite.clean, suite.work / "today_extracted", symlinks=True)
    run_pipeline(cfg)
    suite.load_today()
    return suite


@pytest.mark.slow
def test_a_kill_with_the_index_built_but_not_live_publishes_nothing_and_the_rerun_equals_the_clean_run(reference):
    """Killed inside the retrieval step, the index version written but ``CURRENT`` not moved:
    no index goes live, and the rerun publishes exactly the clean run's tables and index,
    every step ``done``. The kills inside extraction (Spark and Ray started in each killed
    process) and at every step boundary: the benchmark."""
    reference.kill_chain(["retrieval:before-current"], root_name="kill_index", start="today_extracted")
    result = reference.results["kill:retrieval:before-current"]
    assert result["passed"], (result, reference.h.log)
    assert result["rows_lost"] == result["rows_duplicated"] == result["bad_publishes"] == 0


@pytest.mark.slow
def test_a_truncated_log_file_fails_the_run_with_exit_5_and_publishes_nothing(suite):
    """Today's log file cut in half: the run stops in the extract step's file check (exit 5,
    naming the file) before any engine starts, and publishes nothing."""
    suite.corrupt_log_file(rerun=False)
    result = suite.results["corrupt_log_file"]
    assert result["passed"] and result["exit_code"] == 5, (result, suite.h.log)
