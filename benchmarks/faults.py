"""Fault injection for the daily job: kill it, corrupt its input, feed it a bad day, run it twice.

    python -m benchmarks.faults [--rows-per-day 1500] [--users 300] [--items 150] [--workdir DIR]
                                [--only CASE[,CASE...]] [--jobs 2] [--keep] [--reuse-clean]

Every run is a real ``lfm4ads run`` in its own process (the CLI, so exit codes are the
product's), on a tiny generated log of 5 days (train 2, validation 1, test 2), 1 epoch.
A SIGKILL is delivered by the process to itself at a chosen point: the harness patches a
function of the chain in the child only (``--child``), so the product carries no test
hooks. Cases (each on its own copy of a run root):

- ``kill_chain``: yesterday done; today's run killed at every step boundary and at four
  points inside steps (after extraction, with Spark's files staged but not committed,
  right after a table commit with today's other tables not yet committed, with the
  index built but ``CURRENT`` not moved); each kill is followed by a rerun that resumes
  and is itself killed at the next point, until a rerun finishes. After every kill each published partition must be
  exactly the clean run's (nothing half-published); each kill point counts as one case.
- ``kill_pretrain``: a fresh root without a checkpoint, killed when training has finished
  but the checkpoint is not yet written; the rerun must retrain and leave exactly one
  complete checkpoint (``--steps pretrain`` only: the vectors of a new training differ).
- ``corrupt_log_file``: yesterday done; today's log Parquet file truncated. The run must
  fail (exit 5) naming the file and publish nothing of today; after the file is restored the
  rerun matches the clean run.
- ``bad_day``: yesterday done; today's log replaced by 10x as many rows of one replayed
  (user, item) event. A quality gate must stop the run (exit 3), yesterday's tables and
  index stay current; after the day is fixed the rerun matches the clean run.
- ``concurrent``: yesterday done; three runs of today started at once (two plain, one
  ``--wait``): the plain one that loses the lock exits 4, the rest finish, no row twice.

Comparison with the clean run (yesterday then today, uninterrupted): every Delta table
under the root (the log and the four representation tables; rows per ``ds``, keyed by
``entity_id``, vectors to 1e-4; commit timestamps are not compared) and the live index
(day, item ids, vectors). ``rows_lost``/``rows_duplicated`` add up over cases;
``bad_publishes`` counts partitions or index swaps that should not exist (a failed day
published, a partition differing from the clean run's, a half-built index live).

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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
YESTERDAY, TODAY = DAYS[-2], DAYS[-1]

CASES = ("kill_chain", "kill_pretrain", "corrupt_log_file", "bad_day", "concurrent")

# Where the kill chain dies, in chain order. "before:S"/"after:S" wrap step S (after = the
# work is done but the ledger still says running); the others die inside a step.
KILL_CHAIN = [
    "after:ingest",
    "after:pretrain",
    "extract:after-samples",  # today extracted, nothing published
    "extract:staged:2",  # 2nd table commit: Spark's Parquet staged, not committed
    "extract:committed:2",  # right after this run's 2nd table commit (today: 3 of 4 tables)
    "after:extract",
    "after:rollover",
    "after:downstream",
    "retrieval:before-current",  # index version folder complete, CURRENT not moved
    "after:retrieval",
    "before:report",
]


# --- the child: arm one kill point, then be the CLI ---------------------------------------
def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str) -> None:
    """Patch the chain so this process SIGKILLs itself at ``point``."""
    if point.startswith(("before:", "after:")):
        import pipelines.run as run

        when, step = point.split(":")
        orig = run.STEPS[step]

        def wrapped(*a, **k):
            if when == "before":
                _die()
            orig(*a, **k)
            _die()

        run.STEPS[step] = wrapped
    elif point == "extract:after-samples":
        import extract

        orig = extract.extract_days

        def wrapped(*a, **k):
            out = orig(*a, **k)
            _die()
            return out

        extract.extract_days = wrapped
    elif point.startswith(("extract:staged:", "extract:committed:")):
        n = int(point.rsplit(":", 1)[1])
        calls = {"n": 0}
        if point.startswith("extract:staged:"):
            from engines import delta_io

            orig = delta_io.commit_files

            def wrapped(*a, **k):
                calls["n"] += 1
                if calls["n"] == n:
                    _die()
                return orig(*a, **k)

            delta_io.commit_files = wrapped
        else:
            import extract.aggregate as agg

            orig = agg.commit_publish

            def wrapped(*a, **k):
                out = orig(*a, **k)
                calls["n"] += 1
                if calls["n"] == n:
                    _die()
                return out

            agg.commit_publish = wrapped
    elif point == "retrieval:before-current":
        from retrieval import store

        store.set_current = lambda *a, **k: _die()
    elif point == "pretrain:before-save":
        import pretrain.train as train

        train.save_checkpoint = lambda *a, **k: _die()
    elif point != "none":
        raise ValueError(f"unknown kill point {point!r}")


def child(argv: list[str]) -> None:
    point, cli_args = argv[0], argv[1:]
    _arm(point)
    from pipelines.cli import app

    app(cli_args, prog_name="lfm4ads")


# --- the harness ------------------------------------------------------------------------
class Harness:
    def __init__(self, work: Path, base_cfg: dict, log: list):
        self.work, self.base_cfg, self.log = work, base_cfg, log

    def config(self, root: Path) -> Path:
        import yaml

        path = root.parent / f"{root.name}.yaml"
        path.write_text(yaml.safe_dump({**self.base_cfg, "root": str(root)}))
        return path

    def start(
        self,
        root: Path,
        point: str = "none",
        ds: str = TODAY,
        extra: list[str] | None = None,
        tag: str = "",
        command: str = "run",
    ) -> subprocess.Popen:
        cli = ["stage", "pretrain"] if command == "pretrain" else [command]
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.faults",
            "--child",
            point,
            *cli,
            "--config",
            str(self.config(root)),
            "--ds",
            ds,
            *(extra or []),
        ]
        out = open(self.work / f"{root.name}{tag}-{point.replace(':', '_')}.log", "ab")
        # own session: the harness can kill what the child leaves (Spark JVM, Ray) by group
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, proc: subprocess.Popen) -> int:
        rc = proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return rc

    def run(
        self, root: Path, point: str = "none", ds: str = TODAY, extra: list[str] | None = None, command: str = "run"
    ) -> int:
        t0 = time.perf_counter()
        rc = self.wait(self.start(root, point, ds, extra, command=command))
        self.log.append(
            {"root": root.name, "point": point, "ds": ds, "rc": rc, "s": round(time.perf_counter() - t0, 1)}
        )
        print(json.dumps(self.log[-1]), file=sys.stderr, flush=True)
        return rc


def _day_rows(path: Path) -> dict[str, object]:
    """ds -> pyarrow Table of a Delta table's rows (current version)."""
    from deltalake import DeltaTable

    t = DeltaTable(str(path)).to_pyarrow_table()
    out = {}
    for ds in sorted(set(t.column("ds").to_pylist())):
        import pyarrow.compute as pc

        out[ds] = t.filter(pc.equal(t.column("ds"), ds))
    return out


def snapshot(root: Path, with_log: bool = True) -> dict:
    """Every Delta table under root (by name -> ds -> rows) and the live index
    (``with_log=False``: not the log, e.g. while one of its files is corrupt)."""
    from engines import delta_io

    tables = {}
    for path in sorted([*([root / "log"] if with_log else []), *sorted((root / "tables").glob("*"))]):
        if path.is_dir() and delta_io.exists(path):
            tables[path.name] = _day_rows(path)
    return {"tables": tables, "index": _index(root / "indexes")}


def _index(index_root: Path) -> dict | None:
    import faiss
    import numpy as np
    import pyarrow.parquet as pq

    from contracts.index import IDS_FILE, INDEX_FILE, INDEX_MANIFEST_FILE

    cur = index_root / "CURRENT"
    if not cur.is_file():
        return None
    folder = index_root / cur.read_text().strip()
    manifest = json.loads((folder / INDEX_MANIFEST_FILE).read_text())
    ids = pq.read_table(folder / IDS_FILE).column("entity_id").to_pylist()
    index = faiss.read_index(str(folder / INDEX_FILE))
    try:
        vecs = index.reconstruct_n(0, index.ntotal)
    except RuntimeError:  # not reconstructible (e.g. IVF without a direct map): compare ids only
        vecs = None
    return {
        "version": manifest["version"],
        "ds": manifest["ds"],
        "ids": ids,
        "vectors": None if vecs is None else dict(zip(ids, np.asarray(vecs))),
    }


def _key_counts(name: str, rows) -> Counter:
    if "entity_id" in rows.column_names:
        return Counter(rows.column("entity_id").to_pylist())
    cols = [c for c in ("user_id", "item_id", "event_time", "scenario", "sample_type") if c in rows.column_names]
    return Counter(zip(*[rows.column(c).to_pylist() for c in cols]))


def _vectors(rows) -> dict:
    import numpy as np

    if "vector" not in rows.column_names:
        return {}
    return dict(
        zip(rows.column("entity_id").to_pylist(), np.asarray(rows.column("vector").to_pylist(), dtype=np.float64))
    )


def compare(got: dict, want: dict, days: list[str] | None = None) -> dict:
    """Rows lost/duplicated and partitions differing of ``got`` vs ``want`` (restricted to
    ``days`` when given; a partition of another day in ``got`` counts as a bad publish)."""
    import numpy as np

    lost = dup = bad = 0
    problems = []
    names = sorted(set(got["tables"]) | set(want["tables"]))
    for name in names:
        g, w = got["tables"].get(name, {}), want["tables"].get(name, {})
        for ds in sorted(set(g) | set(w)):
            if days is not None and ds not in days:
                if ds in g and ds not in w:
                    bad += 1
                    problems.append(f"{name} ds={ds}: published but must not be")
                continue
            gc = _key_counts(name, g[ds]) if ds in g else Counter()
            wc = _key_counts(name, w[ds]) if ds in w else Counter()
            n_lost = sum((wc - gc).values())
            n_dup = sum((gc - wc).values())
            lost, dup = lost + n_lost, dup + n_dup
            differs = n_lost or n_dup
            if ds in g and ds in w and not differs:
                gv, wv = _vectors(g[ds]), _vectors(w[ds])
                worst = max((float(np.max(np.abs(gv[k] - wv[k]))) for k in wv), default=0.0)
                if worst > 1e-4:
                    differs = True
                    problems.append(f"{name} ds={ds}: vectors differ by up to {worst:.2e}")
            if differs:
                problems.append(f"{name} ds={ds}: {n_lost} row(s) lost, {n_dup} extra")
                if ds in g:
                    bad += 1
    gi, wi = got["index"], want["index"]
    if (gi is None) != (wi is None):
        problems.append(f"index: live={gi and gi['ds']} want={wi and wi['ds']}")
        bad += gi is not None
    elif gi is not None:
        same = gi["ds"] == wi["ds"] and sorted(gi["ids"]) == sorted(wi["ids"])
        if same and gi["vectors"] is not None and wi["vectors"] is not None:
            same = all(np.allclose(gi["vectors"][k], v, atol=1e-4) for k, v in wi["vectors"].items())
        if not same:
            bad += 1
            problems.append(f"index: live index of ds={gi['ds']} differs from the clean run's (ds={wi['ds']})")
    return {"rows_lost": lost, "rows_duplicated": dup, "bad_publishes": bad, "problems": problems}


def published_issues(got: dict, want: dict, earlier_index: dict | None = None) -> list[str]:
    """Partitions present in ``got`` that are not exactly ``want``'s, and a live index that
    is neither ``want``'s nor ``earlier_index`` (yesterday's, which stays live until today's
    is complete)."""
    issues = []
    for name, days in got["tables"].items():
        for ds, rows in days.items():
            one = compare(
                {"tables": {name: {ds: rows}}, "index": None},
                {
                    "tables": {name: {ds: want["tables"].get(name, {}).get(ds)}}
                    if ds in want["tables"].get(name, {})
                    else {},
                    "index": None,
                },
            )
            issues += one["problems"]
    if got["index"] is not None:
        vs_today = compare({"tables": {}, "index": got["index"]}, {"tables": {}, "index": want["index"]})["problems"]
        vs_before = compare({"tables": {}, "index": got["index"]}, {"tables": {}, "index": earlier_index})["problems"]
        if vs_today and (earlier_index is None or vs_before):
            issues += vs_today
    return issues


def _ledger_all_done(root: Path, ds: str) -> list[str]:
    from pipelines.ledger import Ledger

    return [
        f"ledger: {r['step']} is {r['status']}"
        for r in Ledger(root / "ledger.sqlite").rows(ds)
        if r["status"] != "done"
    ]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return {}
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
    only = set(filter(None, a.only.split(",")))
    if only - set(CASES):
        ap.error(f"--only: unknown case(s) {sorted(only - set(CASES))}; cases are {list(CASES)}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    work = (a.workdir or Path(tempfile.mkdtemp(prefix="lfm4ads-faults-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base_cfg = {
        "source": {
            "kind": "generated",
            "generator": {
                "num_users": a.users,
                "num_items": a.items,
                "days": len(DAYS),
                "rows_per_day": a.rows_per_day,
                "windows_per_day": 4,
                "start_date": DAYS[0],
            },
        },
        # fixed split edges: yesterday's and today's runs share one checkpoint
        "split": {"valid_start": DAYS[2], "test_start": DAYS[3]},
        "pretrain": {
            "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
            "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 200, "num_workers": 1},
        },
        "downstream": {"scenario": 0, "epochs": 1, "representations": ["user_ur", "item_ir", "user_cr", "item_cr"]},
        "retrieval": {"recall_target": 0.5},
    }
    events: list[dict] = []
    h = Harness(work, base_cfg, events)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    case_s: dict[str, float] = {}  # wall seconds per case (in lanes they overlap)

    def record(name: str, ok: bool, cmp: dict | None = None, **extra) -> None:
        cmp = cmp or {"rows_lost": 0, "rows_duplicated": 0, "bad_publishes": 0, "problems": []}
        ok = ok and not cmp["problems"]
        results[name] = {
            "passed": bool(ok),
            **{k: cmp[k] for k in ("rows_lost", "rows_duplicated", "bad_publishes")},
            "problems": cmp["problems"][:5],
            **extra,
        }
        print(json.dumps({"case": name, **results[name]}), file=sys.stderr, flush=True)

    # --- the clean run: yesterday, then today ---------------------------------------------
    clean, after_yesterday = work / "clean", work / "after_yesterday"
    reuse = a.reuse_clean and (work / "clean.done").is_file()
    if reuse:
        for case in CASES:
            if not only or case in only:
                shutil.rmtree(work / case, ignore_errors=True)
    else:
        for old in work.iterdir():  # only what an earlier run of this harness made
            if old.is_dir() and old.name in ("clean", "after_yesterday", *CASES):
                shutil.rmtree(old)
            elif old.is_file() and old.suffix in (".log", ".yaml", ".done"):
                old.unlink()
        t1 = time.perf_counter()
        rc_y = h.run(clean, ds=YESTERDAY)
        case_s["clean"] = round(time.perf_counter() - t1, 1)
        if rc_y != 0:
            raise SystemExit(f"clean run of {YESTERDAY} failed (exit {rc_y}); see {work}")
        shutil.copytree(clean, after_yesterday, symlinks=True)
    base_y = snapshot(after_yesterday)
    want: dict = {}  # the clean run's final state: set by clean_today()
    ckpts = [p for p in (after_yesterday / "checkpoints").iterdir() if not p.name.startswith(".")]

    def clean_today() -> None:
        nonlocal want
        if not reuse:
            t1 = time.perf_counter()
            if h.run(clean, ds=TODAY) != 0:
                raise SystemExit(f"clean run of {TODAY} failed; see {work}")
            (work / "clean.done").write_text("")
            case_s["clean"] = round(case_s.get("clean", 0.0) + time.perf_counter() - t1, 1)
        want = snapshot(clean)

    def fresh_root(name: str, with_checkpoint: bool) -> Path:
        """A new root with the clean run's log (and checkpoint): nothing else of it (the
        log is complete after yesterday's run and never rewritten)."""
        root = work / name
        root.mkdir()
        shutil.copytree(after_yesterday / "log", root / "log")
        if with_checkpoint:
            (root / "checkpoints").mkdir()
            for c in ckpts:
                shutil.copytree(c, root / "checkpoints" / c.name)
        return root

    def copy_after_yesterday(name: str) -> Path:
        root = work / name
        shutil.copytree(after_yesterday, root, symlinks=True)
        return root

    # --- kill chain ------------------------------------------------------------------
    def case_kill_chain() -> None:
        root = copy_after_yesterday("kill_chain")
        per_point = {}
        for point in KILL_CHAIN:
            rc = h.run(root, point)
            # a kill may leave days unpublished for now, never a wrong or partial partition or index
            bad = published_issues(snapshot(root), want, base_y["index"])
            per_point[point] = {"rc": rc, "killed": rc == -signal.SIGKILL, "bad_after_kill": bad}
        rc = h.run(root)
        final = compare(snapshot(root), want)
        final["problems"] += _ledger_all_done(root, TODAY)
        if rc != 0:
            final["problems"].append(f"final rerun exit {rc}")
        for point, info in per_point.items():
            ok = info["killed"] and not info["bad_after_kill"]
            cmp = dict(
                final,
                problems=[
                    *final["problems"],
                    *info["bad_after_kill"],
                    *([] if info["killed"] else [f"not killed at {point} (exit {info['rc']})"]),
                ],
            )
            cmp["bad_publishes"] = final["bad_publishes"] + len(info["bad_after_kill"])
            # the chain's final tables are shared by every point: count the rows once
            if point != KILL_CHAIN[0]:
                cmp["rows_lost"] = cmp["rows_duplicated"] = 0
            record(f"kill:{point}", ok, cmp)

    # --- kill during pretraining -------------------------------------------------------
    def case_kill_pretrain() -> None:
        root = fresh_root("kill_pretrain", with_checkpoint=False)
        rc1 = h.run(root, "pretrain:before-save", command="pretrain")
        left = sorted(x.name for x in (root / "checkpoints").glob("*")) if (root / "checkpoints").exists() else []
        rc2 = h.run(root, command="pretrain")
        complete = (
            [
                x
                for x in (root / "checkpoints").iterdir()
                if not x.name.startswith((".", "_")) and (x / "manifest.json").is_file()
            ]
            if (root / "checkpoints").exists()
            else []
        )
        problems = []
        if rc1 != -signal.SIGKILL:
            problems.append(f"not killed (exit {rc1})")
        if any((Path(root / "checkpoints" / n) / "manifest.json").is_file() for n in left if not n.startswith(".")):
            problems.append(f"a checkpoint appeared although the kill came before it was written: {left}")
        if rc2 != 0 or len(complete) != 1:
            problems.append(f"rerun exit {rc2}, {len(complete)} complete checkpoint(s)")
        problems += _ledger_all_done(root, TODAY)
        record(
            "kill:pretrain:before-save",
            not problems,
            {"rows_lost": 0, "rows_duplicated": 0, "bad_publishes": 0, "problems": problems},
        )

    # --- a corrupt input file ---------------------------------------------------------
    def case_corrupt_log_file() -> None:
        from engines import delta_io

        root = copy_after_yesterday("corrupt_log_file")
        files = [Path(u.removeprefix("file://")) for u in delta_io.day_file_uris(root / "log", TODAY)]
        target = files[0]
        good = target.read_bytes()
        target.write_bytes(good[: len(good) // 2])
        rc1 = h.run(root)
        msg = (work / "corrupt_log_file-none.log").read_text(errors="replace")
        base_tables = {"tables": {k: v for k, v in base_y["tables"].items() if k != "log"}, "index": base_y["index"]}
        during = compare(snapshot(root, with_log=False), base_tables, days=DAYS[:-1])
        problems = list(during["problems"])
        if rc1 != 5:
            problems.append(f"the run with a corrupt log file exited {rc1}, want 5 (bad input file)")
        if target.name not in msg:
            problems.append(f"the error does not name the corrupt file {target.name}")
        bad = during["bad_publishes"]
        target.write_bytes(good)  # the operator restores the file
        rc2 = h.run(root)
        final = compare(snapshot(root), want)
        if rc2 != 0:
            problems.append(f"rerun after the fix: exit {rc2}")
        record(
            "corrupt_log_file",
            not problems,
            dict(final, problems=problems + final["problems"], bad_publishes=bad + final["bad_publishes"]),
            exit_code=rc1,
        )

    # --- a day of bad rows --------------------------------------------------------------
    def case_bad_day() -> None:
        import pyarrow as pa

        from datasources import read_log, read_log_spec
        from datasources.log_store import write_log_day

        root = copy_after_yesterday("bad_day")
        spec = read_log_spec(root / "log")
        today = read_log(root / "log", [TODAY])
        flood = pa.concat_tables([today.slice(0, 1)] * (10 * today.num_rows))
        write_log_day(root / "log", flood, TODAY, spec)
        rc1 = h.run(root)
        during = compare(snapshot(root), base_y, days=DAYS[:-1])
        problems = list(during["problems"])
        if rc1 != 3:
            problems.append(f"exit {rc1}, want 3 (a quality gate)")
        report = root / "reports" / TODAY / "report.md"
        if not report.is_file() or "RUN STOPPED BEFORE PUBLISHING" not in report.read_text():
            problems.append("the report does not say the run stopped")
        bad = during["bad_publishes"]
        write_log_day(root / "log", today, TODAY, spec)  # upstream re-delivers the day
        rc2 = h.run(root)
        final = compare(snapshot(root), want, days=None)
        # the log's history differs (two extra commits) but its rows must equal the clean log's
        if rc2 != 0:
            problems.append(f"rerun after the fix: exit {rc2}")
        record(
            "bad_day",
            not problems,
            dict(final, problems=problems + final["problems"], bad_publishes=bad + final["bad_publishes"]),
            exit_code=rc1,
        )

    # --- two (three) runs at once -------------------------------------------------------
    def case_concurrent() -> None:
        root = copy_after_yesterday("concurrent")
        t1 = time.perf_counter()
        procs = [h.start(root, tag="-a"), h.start(root, tag="-b"), h.start(root, extra=["--wait"], tag="-c")]
        rcs = [h.wait(p) for p in procs]
        events.append({"root": "concurrent", "rc": rcs, "s": round(time.perf_counter() - t1, 1)})
        print(json.dumps(events[-1]), file=sys.stderr, flush=True)
        final = compare(snapshot(root), want)
        problems = list(final["problems"])
        if sorted(set(rcs[:2])) not in ([0, 4], [4]) or rcs[2] != 0:
            problems.append(f"exit codes {rcs}: want one plain run 0 and one 4 (or both 4 behind --wait), --wait 0")
        record("concurrent", not problems, dict(final, problems=problems), exit_codes=rcs)

    cases = {
        "kill_chain": case_kill_chain,
        "kill_pretrain": case_kill_pretrain,
        "corrupt_log_file": case_corrupt_log_file,
        "bad_day": case_bad_day,
        "concurrent": case_concurrent,
    }
    selected = [c for c in CASES if not only or c in only]

    def timed(case: str) -> None:
        t1 = time.perf_counter()
        cases[case]()
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
                if not want:
                    abort.set()
                ready.set()
            timed("kill_chain")
        finally:
            worker.join()
        if errors:
            raise errors[0]

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
