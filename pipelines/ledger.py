"""The run ledger: what each step of each ``ds`` consumed and produced, and whether it finished.

SQLite, one file under the run root: transactional on any local disk, no server, no
JVM, readable with the ``sqlite3`` shell by an on-call engineer. (A Delta ledger would
need a commit per step-state change; on object storage use a local path for the ledger
or a database URL in a later version.) Writes are single-row and short, so concurrent
readers never block a run for long.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    ds TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,            -- running | done | failed | interrupted
    config_hash TEXT NOT NULL,
    inputs TEXT NOT NULL,            -- JSON
    outputs TEXT,                    -- JSON
    error TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (ds, step)
);
CREATE TABLE IF NOT EXISTS history (
    ds TEXT, step TEXT, status TEXT, config_hash TEXT, inputs TEXT, outputs TEXT, error TEXT,
    started_at TEXT, finished_at TEXT
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """``Ledger(path)``: one row per (ds, step) with its latest state; every change is
    also appended to ``history``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.row_factory = sqlite3.Row
        return con

    def _write(self, ds: str, step: str, **cols) -> None:
        with closing(self._connect()) as con, con:
            row = con.execute("SELECT * FROM steps WHERE ds=? AND step=?", (ds, step)).fetchone()
            merged = dict(row) if row else {"ds": ds, "step": step}
            merged.update(cols)
            con.execute(
                "INSERT OR REPLACE INTO steps (ds, step, status, config_hash, inputs, outputs, error, started_at, "
                "finished_at) VALUES (:ds, :step, :status, :config_hash, :inputs, :outputs, :error, :started_at, "
                ":finished_at)",
                {
                    k: merged.get(k)
                    for k in (
                        "ds",
                        "step",
                        "status",
                        "config_hash",
                        "inputs",
                        "outputs",
                        "error",
                        "started_at",
                        "finished_at",
                    )
                },
            )
            con.execute("INSERT INTO history SELECT * FROM steps WHERE ds=? AND step=?", (ds, step))

    def start(self, ds: str, step: str, config_hash: str, inputs: dict) -> None:
        self._write(
            ds,
            step,
            status="running",
            config_hash=config_hash,
            inputs=json.dumps(inputs, default=str),
            outputs=None,
            error=None,
            started_at=_now(),
            finished_at=None,
        )

    def finish(self, ds: str, step: str, outputs: dict) -> None:
        self._write(ds, step, status="done", outputs=json.dumps(outputs, default=str), finished_at=_now())

    def fail(self, ds: str, step: str, error: str) -> None:
        self._write(ds, step, status="failed", error=error[:4000], finished_at=_now())

    def interrupt(self, ds: str, step: str, signal_name: str) -> None:
        """The step was stopped by SIGINT/SIGTERM; nothing partial of it was published."""
        self._write(ds, step, status="interrupted", error=f"interrupted by {signal_name}", finished_at=_now())

    def get(self, ds: str, step: str) -> dict | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM steps WHERE ds=? AND step=?", (ds, step)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["inputs"] = json.loads(out["inputs"])
        out["outputs"] = json.loads(out["outputs"]) if out["outputs"] else None
        return out

    def done(self, ds: str, step: str, config_hash: str) -> dict | None:
        """The outputs of a finished step with this config, else None."""
        row = self.get(ds, step)
        if row and row["status"] == "done" and row["config_hash"] == config_hash:
            return row["outputs"]
        return None

    def rows(self, ds: str | None = None) -> list[dict]:
        with closing(self._connect()) as con:
            q = "SELECT ds, step, status, started_at, finished_at, error FROM steps"
            rows = con.execute(q + (" WHERE ds=?" if ds else "") + " ORDER BY ds, started_at", (ds,) if ds else ())
            return [dict(r) for r in rows]
