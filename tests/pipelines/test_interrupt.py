"""SIGINT / SIGTERM stop `lfm4ads` at a step boundary and in the middle of a step: exit
130 / 143, the step marked `interrupted` in the ledger, nothing of it published, no process
of the run left behind. Real CLI processes on a tiny generated log."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from contracts import RunLayout
from pipelines import RunConfig

TINY = {
    "source": {
        "kind": "generated",
        "generator": {"num_users": 200, "num_items": 100, "days": 4, "rows_per_day": 800, "windows_per_day": 2},
    },
    "split": {"valid_days": 1, "test_days": 1},
    "pretrain": {
        "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
        "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 200},
    },
    "downstream": {"scenario": 0, "epochs": 1},
    "retrieval": {"recall_target": 0.5},
}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "root": str(tmp_path / "root")}))
    return path


def _start(args: list[str]) -> subprocess.Popen:
    # its own session: the test can check that nothing of the run's process group survives
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _ledger(root: Path) -> dict[str, str]:
    path = root / "ledger.sqlite"
    if not path.is_file():
        return {}
    with sqlite3.connect(path) as con:
        return {step: status for step, status in con.execute("SELECT step, status FROM steps")}


def _wait_until(proc: subprocess.Popen, cond, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"exited {proc.returncode} early: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def _finish(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)  # the CLI process only, as `kill` or a scheduler would
    # A bound for a hang, not a timing check: "within seconds" on a quiet machine, but at load
    # 12 on two cores (two test workers plus six busy loops) one stop, 4 s into the extract
    # step, took over 90 s to return (not reproduced: 18 more at load 11 took 2-20 s)
    out, err = proc.communicate(timeout=300)
    leftover = ""
    for _ in range(120):  # the JVM and Ray's processes exit once their parent is gone
        leftover = subprocess.run(
            ["ps", "-o", "pid=,args=", "-g", str(proc.pid)], capture_output=True, text=True
        ).stdout.strip()
        if not leftover:
            break
        time.sleep(0.5)
    if leftover:  # clean up before failing
        os.killpg(proc.pid, signal.SIGKILL)
    assert not leftover, f"processes of the interrupted run still alive 20 s after it exited:\n{leftover}"
    return proc.returncode, out, err


def _json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _start_paused(args: list[str], step: str, err_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LFM4ADS_PAUSE_IN_STEP": step}
    with err_path.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *args, "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
            env=env,
        )


def _paused(err_path: Path, step: str) -> bool:
    return any(
        line.startswith("{") and json.loads(line).get("event") == "paused" and json.loads(line).get("step") == step
        for line in err_path.read_text().splitlines()
    )


def outputs(root: Path) -> tuple:
    """(table versions, live index version, checkpoint names) of a run root."""
    ckpts = sorted(p.parent.name for p in (root / "checkpoints").glob("*/manifest.json"))
    return _published_versions(root), _live_index(root), ckpts


def _published_versions(root: Path) -> dict[str, int]:
    from deltalake import DeltaTable

    tables = root / "tables"
    if not tables.is_dir():
        return {}
    return {p.name: DeltaTable(str(p)).version() for p in sorted(tables.iterdir()) if (p / "_delta_log").is_dir()}


def _live_index(root: Path) -> str | None:
    current = root / "indexes" / "CURRENT"
    return current.read_text().strip() if current.is_file() else None


def test_sigterm_mid_extraction_publishes_nothing(tmp_path):
    """A checkpoint exists (random weights: what is under test is stopping, not training); the
    extract step (Spark start, Ray Data extraction, Spark aggregation) is stopped a few
    seconds after it started: exit 143, `interrupted`, no table version for any day."""
    from tests.pipelines.helpers import untrained_checkpoint

    cfg_path = _config(tmp_path)
    cfg = RunConfig.model_validate(yaml.safe_load(cfg_path.read_text()))
    untrained_checkpoint(cfg, "v-interrupt")
    root = tmp_path / "root"
    proc = _start(["stage", "extract", "--config", str(cfg_path)])
    _wait_until(proc, lambda: _ledger(root).get("extract") == "running")
    time.sleep(4)  # inside the step: engines starting or extraction running
    rc, out, err = _finish(proc, signal.SIGTERM)
    assert rc == 143, err[-3000:]
    assert _ledger(root)["extract"] == "interrupted"
    layout = RunLayout(root)
    for name in ("user_ur", "item_ir", "user_cr", "item_cr"):
        assert not (layout.table(name) / "_delta_log").is_dir(), f"{name} was published"
    assert "SIGTERM" in _json_lines(err)[-1]["msg"]


def test_sigint_mid_training_saves_no_checkpoint(tmp_path):
    """Ctrl-C while Ray Train is starting or training (Ray Train installs its own SIGINT
    handler, which only asked the trainer to stop and let the chain go on): exit 130,
    `pretrain` interrupted, no checkpoint manifest, nothing published."""
    cfg_path = _config(tmp_path)
    root = tmp_path / "root"
    proc = _start(["run", "--config", str(cfg_path)])
    _wait_until(proc, lambda: _ledger(root).get("pretrain") == "running")
    time.sleep(6)  # inside the step: Ray and the trainer starting, or an epoch running
    rc, out, err = _finish(proc, signal.SIGINT)
    assert rc == 130, err[-3000:]
    steps = _ledger(root)
    assert steps["pretrain"] == "interrupted" and "extract" not in steps, steps
    ckpts = root / "checkpoints"
    assert not ckpts.is_dir() or not any((p / "manifest.json").is_file() for p in ckpts.iterdir())
    assert not (root / "tables").is_dir()
    assert out.strip() == ""
