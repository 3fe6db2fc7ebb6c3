"""The fault cases: kill the daily job, corrupt its input, feed it a bad day, run it twice.

Each case runs real ``lfm4ads`` processes (tests/pipelines/faults_support.py) on its own
copy of a run root and compares what they published with a clean run of yesterday then
today. Kills go through the product's explicit kill points (engines.fault_points,
``$LFM4ADS_KILL_AT``): nothing is patched. Cases:

- ``kill_chain``: yesterday done; today's run killed at every step boundary and at four
  points inside steps (after extraction, with a partition's Parquet written but not
  committed, right after a table commit with today's other tables not yet committed, with
  the index built but ``CURRENT`` not moved); each kill is followed by a rerun that resumes
  and is itself killed at the next point, until a rerun finishes. After every kill each
  published partition must be exactly the clean run's (nothing half-published); each kill
  point counts as one case.
- ``kill_pretrain``: a fresh root without a checkpoint, killed when training has finished
  but the checkpoint is not yet written; the rerun must retrain and leave exactly one
  complete checkpoint (``stage pretrain`` only: the vectors of a new training differ).
- ``corrupt_log_file``: yesterday done; today's log Parquet file truncated. The run must
  fail (exit 5) naming the file and publish nothing of today; after the file is restored
  the rerun matches the clean run.
- ``bad_day``: yesterday done; today's log replaced by 10x as many rows of one replayed
  (user, item) event. A quality gate must stop the run (exit 3), yesterday's tables and
  index stay current; after the day is fixed the rerun matches the clean run.
- ``concurrent``: yesterday done; three runs of today started at once (two plain, one
  ``--wait``): the plain one that loses the lock exits 4, the rest finish, no row twice.

``rows_lost``/``rows_duplicated`` add up over cases; ``bad_publishes`` counts partitions or
index swaps that should not exist (a failed day published, a partition differing from the
clean run's, a half-built index live).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.pipelines.faults_support import (
    DAYS,
    TODAY,
    YESTERDAY,
    Harness,
    clean_result,
    compare,
    ledger_not_done,
    published_issues,
    snapshot,
)

CASES = ("kill_chain", "kill_pretrain", "corrupt_log_file", "bad_day", "concurrent")

# Where the kill chain dies, in chain order ($LFM4ADS_KILL_AT values; ":2": the 2nd time the
# run reaches the point). "before:S"/"after:S" wrap step S (after: the work is done but the
# ledger still says running); the others die inside a step.
KILL_CHAIN = [
    "after:ingest",
    "after:pretrain",
    "extract:after-samples",  # today extracted, nothing published
    "delta:staged:2",  # 2nd table commit: Spark's Parquet staged, not committed
    "extract:committed:2",  # right after this run's 2nd table commit (today: 3 of 4 tables)
    "after:extract",
    "after:rollover",
    "after:downstream",
    "retrieval:before-current",  # index version folder complete, CURRENT not moved
    "after:retrieval",
    "before:report",
]


class FaultSuite:
    """The clean reference (roots ``clean`` and ``after_yesterday`` under ``work``) and the
    cases; each case's outcome lands in ``results`` (name -> passed, rows_lost,
    rows_duplicated, bad_publishes, problems, ...)."""

    def __init__(self, harness: Harness, echo: bool = True):
        self.h, self.work, self.echo = harness, harness.work, echo
        self.clean, self.after_yesterday = self.work / "clean", self.work / "after_yesterday"
        self.results: dict[str, dict] = {}
        self.base_y: dict = {}  # snapshot after yesterday's clean run
        self.want: dict = {}  # snapshot after today's clean run

    # --- the reference ---------------------------------------------------------------------
    def clean_yesterday(self, run: Callable[[Path, str], int] | None = None) -> None:
        """Run yesterday on ``clean`` (by default a real CLI process; ``run(root, ds)`` -> exit
        code otherwise) and keep a copy of that state as ``after_yesterday``."""
        rc = (run or self._cli)(self.clean, YESTERDAY)
        if rc != 0:
            raise SystemExit(f"clean run of {YESTERDAY} failed (exit {rc}); see {self.work}")
        shutil.copytree(self.clean, self.after_yesterday, symlinks=True)
        self.load_yesterday()

    def load_yesterday(self) -> None:
        self.base_y = snapshot(self.after_yesterday)

    def clean_today(self, run: Callable[[Path, str], int] | None = None) -> None:
        """Run today on ``clean``: the reference every case is compared with."""
        rc = (run or self._cli)(self.clean, TODAY)
        if rc != 0:
            raise SystemExit(f"clean run of {TODAY} failed (exit {rc}); see {self.work}")
        (self.work / "clean.done").write_text("")
        self.load_today()

    def load_today(self) -> None:
        self.want = snapshot(self.clean)

    def _cli(self, root: Path, ds: str) -> int:
        return self.h.run(root, ds=ds)

    def copy_after_yesterday(self, name: str) -> Path:
        root = self.work / name
        shutil.copytree(self.after_yesterday, root, symlinks=True)
        return root

    def fresh_root(self, name: str) -> Path:
        """A new root with the clean run's log only (complete after yesterday's run, never rewritten)."""
        root = self.work / name
        root.mkdir()
        shutil.copytree(self.after_yesterday / "log", root / "log")
        return root

    def record(self, name: str, ok: bool, cmp: dict | None = None, **extra) -> None:
        cmp = cmp or clean_result()
        self.results[name] = {
            "passed": bool(ok and not cmp["problems"]),
            **{k: cmp[k] for k in ("rows_lost", "rows_duplicated", "bad_publishes")},
            "problems": cmp["problems"][:5],
            **extra,
        }
        if self.echo:
            print(json.dumps({"case": name, **self.results[name]}), file=sys.stderr, flush=True)

    # --- the cases -------------------------------------------------------------------------
    def kill_chain(self, points: list[str] = KILL_CHAIN, root_name: str = "kill_chain", start: str = "") -> None:
        """Today killed at each of ``points`` in turn (each run resumes the last), then finished;
        from a copy of the root ``start`` under ``work`` (default: the state after yesterday)."""
        root = self.work / root_name
        shutil.copytree(self.work / start if start else self.after_yesterday, root, symlinks=True)
        per_point = {}
        for point in points:
            rc = self.h.run(root, point)
            # a kill may leave days unpublished for now, never a wrong or partial partition or index
            bad = published_issues(snapshot(root), self.want, self.base_y["index"])
            per_point[point] = {"rc": rc, "killed": rc == -signal.SIGKILL, "bad_after_kill": bad}
        rc = self.h.run(root)
        final = compare(snapshot(root), self.want)
        final["problems"] += ledger_not_done(root, TODAY)
        if rc != 0:
            final["problems"].append(f"final rerun exit {rc}")
        for point, info in per_point.items():
            killed = [] if info["killed"] else [f"not killed at {point} (exit {info['rc']})"]
            cmp = dict(final, problems=[*final["problems"], *info["bad_after_kill"], *killed])
            cmp["bad_publishes"] = final["bad_publishes"] + len(info["bad_after_kill"])
            # the chain's final tables are shared by every point: count the rows once
            if point != points[0]:
                cmp["rows_lost"] = cmp["rows_duplicated"] = 0
            self.record(f"kill:{point}", info["killed"] and not info["bad_after_kill"], cmp)

    def kill_pretrain(self) -> None:
        root = self.fresh_root("kill_pretrain")
        ckpts = root / "checkpoints"
        rc1 = self.h.run(root, "pretrain:before-save", command="pretrain")
        left = sorted(x.name for x in ckpts.glob("*")) if ckpts.exists() else []
        rc2 = self.h.run(root, command="pretrain")
        complete = [
            x
            for x in (ckpts.iterdir() if ckpts.exists() else [])
            if not x.name.startswith((".", "_")) and (x / "manifest.json").is_file()
        ]
        problems = []
        if rc1 != -signal.SIGKILL:
            problems.append(f"not killed (exit {rc1})")
        if any((ckpts / n / "manifest.json").is_file() for n in left if not n.startswith(".")):
            problems.append(f"a checkpoint appeared although the kill came before it was written: {left}")
        if rc2 != 0 or len(complete) != 1:
            problems.append(f"rerun exit {rc2}, {len(complete)} complete checkpoint(s)")
        problems += ledger_not_done(root, TODAY)
        self.record("kill:pretrain:before-save", not problems, clean_result(problems))

    def _rerun_after_fix(
        self, name: str, root: Path, during: dict, problems: list[str], rc1: int, rerun: bool = True
    ) -> None:
        """After the input is fixed: rerun, compare with the clean run, record the case
        (``during``: the comparison while the input was bad; ``rc1``: that run's exit code)."""
        final = clean_result()
        if rerun:
            rc2 = self.h.run(root)
            final = compare(snapshot(root), self.want)
            if rc2 != 0:
                problems.append(f"rerun after the fix: exit {rc2}")
        cmp = dict(final, problems=problems + final["problems"])
        cmp["bad_publishes"] = during["bad_publishes"] + final["bad_publishes"]
        self.record(name, not problems, cmp, exit_code=rc1)

    def corrupt_log_file(self, rerun: bool = True) -> None:
        """``rerun=False``: stop after the failed run (no restored file, no rerun)."""
        from engines import delta_io

        root = self.copy_after_yesterday("corrupt_log_file")
        target = Path(delta_io.day_file_uris(root / "log", TODAY)[0].removeprefix("file://"))
        good = target.read_bytes()
        target.write_bytes(good[: len(good) // 2])
        rc1 = self.h.run(root)
        msg = self.h.log_path(root).read_text(errors="replace")
        base_tables = {"tables": {k: v for k, v in self.base_y["tables"].items() if k != "log"}}
        during = compare(snapshot(root, with_log=False), {**base_tables, "index": self.base_y["index"]}, DAYS[:-1])
        problems = list(during["problems"])
        if rc1 != 5:
            problems.append(f"the run with a corrupt log file exited {rc1}, want 5 (bad input file)")
        if target.name not in msg:
            problems.append(f"the error does not name the corrupt file {target.name}")
        if rerun:
            target.write_bytes(good)  # the operator restores the file
        self._rerun_after_fix("corrupt_log_file", root, during, problems, rc1, rerun)

    def bad_day(self) -> None:
        import pyarrow as pa

        from datasources import read_log, read_log_spec
        from datasources.log_store import write_log_day

        root = self.copy_after_yesterday("bad_day")
        spec = read_log_spec(root / "log")
        today = read_log(root / "log", [TODAY])
        flood = pa.concat_tables([today.slice(0, 1)] * (10 * today.num_rows))
        write_log_day(root / "log", flood, TODAY, spec)
        rc1 = self.h.run(root)
        during = compare(snapshot(root), self.base_y, days=DAYS[:-1])
        problems = list(during["problems"])
        if rc1 != 3:
            problems.append(f"exit {rc1}, want 3 (a quality gate)")
        report = root / "reports" / TODAY / "report.md"
        if not report.is_file() or "RUN STOPPED BEFORE PUBLISHING" not in report.read_text():
            problems.append("the report does not say the run stopped")
        write_log_day(root / "log", today, TODAY, spec)  # upstream re-delivers the day
        # the log's history differs (two extra commits) but its rows must equal the clean log's
        self._rerun_after_fix("bad_day", root, during, problems, rc1)

    def concurrent(self) -> None:
        root = self.copy_after_yesterday("concurrent")
        t1 = time.perf_counter()
        procs = [self.h.start(root, tag=t) for t in ("-a", "-b")]
        procs.append(self.h.start(root, extra=["--wait"], tag="-c"))
        rcs = [self.h.wait(p) for p in procs]
        self.h.log.append({"root": "concurrent", "rc": rcs, "s": round(time.perf_counter() - t1, 1)})
        if self.echo:
            print(json.dumps(self.h.log[-1]), file=sys.stderr, flush=True)
        final = compare(snapshot(root), self.want)
        problems = list(final["problems"])
        if sorted(set(rcs[:2])) not in ([0, 4], [4]) or rcs[2] != 0:
            problems.append(f"exit codes {rcs}: want one plain run 0 and one 4 (or both 4 behind --wait), --wait 0")
        self.record("concurrent", not problems, dict(final, problems=problems), exit_codes=rcs)
