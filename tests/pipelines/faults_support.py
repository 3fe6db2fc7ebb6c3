"""Running and judging fault-injected runs: real ``lfm4ads`` processes, armed through
``$LFM4ADS_KILL_AT`` (engines.fault_points), and the comparison of what they published
with a clean run's. Used by tests/pipelines/fault_cases.py, hence by
tests/pipelines/test_faults.py and ``python -m benchmarks.faults``.

Comparison: every Delta table under a root (the log and the four representation tables;
rows per ``ds``, keyed by ``entity_id``, vectors to 1e-4; commit timestamps are not
compared) and the live index (day, item ids, vectors).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from engines.fault_points import KILL_ENV

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
YESTERDAY, TODAY = DAYS[-2], DAYS[-1]


def base_config(rows_per_day: int = 1500, users: int = 300, items: int = 150, epochs: int = 1) -> dict:
    """The run config of every fault case (``root`` added per run): a generated log of 5
    days (train 2, validation 1, test 2), a tiny model, 1 epoch."""
    return {
        "source": {
            "kind": "generated",
            "generator": {
                "num_users": users,
                "num_items": items,
                "days": len(DAYS),
                "rows_per_day": rows_per_day,
                "windows_per_day": 4,
                "start_date": DAYS[0],
            },
        },
        # fixed split edges: yesterday's and today's runs share one checkpoint
        "split": {"valid_start": DAYS[2], "test_start": DAYS[3]},
        "pretrain": {
            "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
            "train": {"epochs": epochs, "batch_size": 256, "diagnostics_rows": 200, "num_workers": 1},
        },
        "downstream": {"scenario": 0, "epochs": 1, "representations": ["user_ur", "item_ir", "user_cr", "item_cr"]},
        "retrieval": {"recall_target": 0.5},
    }


class Harness:
    """Starts ``lfm4ads`` processes on run roots under ``work`` (one YAML config per root)
    and records each run (root, kill point, day, exit code, seconds) in ``log``."""

    def __init__(self, work: Path, base_cfg: dict, log: list, echo: bool = True):
        self.work, self.base_cfg, self.log, self.echo = work, base_cfg, log, echo

    def config(self, root: Path) -> Path:
        import yaml

        path = root.parent / f"{root.name}.yaml"
        path.write_text(yaml.safe_dump({**self.base_cfg, "root": str(root)}))
        return path

    def log_path(self, root: Path, point: str = "none", tag: str = "") -> Path:
        """Where the run's stdout and stderr go."""
        return self.work / f"{root.name}{tag}-{point.replace(':', '_')}.log"

    def start(
        self,
        root: Path,
        point: str = "none",
        ds: str = TODAY,
        extra: list[str] | None = None,
        tag: str = "",
        command: str = "run",
    ) -> subprocess.Popen:
        """``lfm4ads <command>`` on ``root``, SIGKILLed at kill point ``point`` ("none": not armed)."""
        cli = ["stage", "pretrain"] if command == "pretrain" else [command]
        cmd = [sys.executable, "-m", "pipelines.cli", *cli, "--config", str(self.config(root)), "--ds", ds]
        env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        if point != "none":
            env[KILL_ENV] = point
        out = open(self.log_path(root, point, tag), "ab")
        # own session: the harness can kill what the child leaves (Spark JVM, Ray) by group
        proc = subprocess.Popen(
            [*cmd, *(extra or [])], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        out.close()  # the child holds its own copy
        return proc

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
        if self.echo:
            print(json.dumps(self.log[-1]), file=sys.stderr, flush=True)
        return rc


# --- snapshots ------------------------------------------------------------------------------
def _day_rows(path: Path) -> dict[str, object]:
    """ds -> pyarrow Table of a Delta table's rows (current version)."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    t = DeltaTable(str(path)).to_pyarrow_table()
    return {ds: t.filter(pc.equal(t.column("ds"), ds)) for ds in sorted(set(t.column("ds").to_pylist()))}


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


# --- comparisons ----------------------------------------------------------------------------
def _key_counts(rows) -> Counter:
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


def clean_result(problems: list[str] | None = None) -> dict:
    """A comparison that found nothing wrong (but ``problems``)."""
    return {"rows_lost": 0, "rows_duplicated": 0, "bad_publishes": 0, "problems": list(problems or [])}


def compare(got: dict, want: dict, days: list[str] | None = None) -> dict:
    """Rows lost/duplicated and partitions differing of ``got`` vs ``want`` (restricted to
    ``days`` when given; a partition of another day in ``got`` counts as a bad publish)."""
    import numpy as np

    lost = dup = bad = 0
    problems = []
    for name in sorted(set(got["tables"]) | set(want["tables"])):
        g, w = got["tables"].get(name, {}), want["tables"].get(name, {})
        for ds in sorted(set(g) | set(w)):
            if days is not None and ds not in days:
                if ds in g and ds not in w:
                    bad += 1
                    problems.append(f"{name} ds={ds}: published but must not be")
                continue
            gc = _key_counts(g[ds]) if ds in g else Counter()
            wc = _key_counts(w[ds]) if ds in w else Counter()
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
        wanted = want["tables"].get(name, {})
        for ds, rows in days.items():
            one = compare(
                {"tables": {name: {ds: rows}}, "index": None},
                {"tables": {name: {ds: wanted[ds]}} if ds in wanted else {}, "index": None},
            )
            issues += one["problems"]
    if got["index"] is not None:
        vs_today = compare({"tables": {}, "index": got["index"]}, {"tables": {}, "index": want["index"]})["problems"]
        vs_before = compare({"tables": {}, "index": got["index"]}, {"tables": {}, "index": earlier_index})["problems"]
        if vs_today and (earlier_index is None or vs_before):
            issues += vs_today
    return issues


def ledger_not_done(root: Path, ds: str) -> list[str]:
    """One line per step of ``ds`` whose ledger status is not ``done``."""
    from pipelines.ledger import Ledger

    return [
        f"ledger: {r['step']} is {r['status']}"
        for r in Ledger(root / "ledger.sqlite").rows(ds)
        if r["status"] != "done"
    ]
