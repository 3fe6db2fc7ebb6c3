"""Every command's exit code and message for a bad config (2) and a bad input file (5), one
line without a traceback (unless --debug); --version; --set; config-relative paths; JSON
logs; backfill skipping days that cannot have a split.

Commands run in this process through ``pipelines.cli.cli(argv)`` (the console script's body,
minus the stderr redirect), and a few through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import cli
from pipelines.config import load_run_config

GEN = {
    "kind": "generated",
    "generator": {"num_users": 30, "num_items": 20, "days": 4, "rows_per_day": 60, "windows_per_day": 1},
}
SPEC = {
    "name": "mine",
    "user_id": "uid",
    "item_id": "ad_id",
    "event_time": "ts",
    "scenario": "placement",
    "scenarios": {0: "feed", 1: "search"},
    "tasks": ["click"],
    "user_features": [],
    "item_features": [],
    "sequence": {"item_field": "ad_id", "max_len": 5},
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def bad_config(tmp_path) -> Path:
    return _write(tmp_path / "bad.yaml", {"root": str(tmp_path / "r"), "pretrain": {"train": {"epoch": 3}}})


@pytest.fixture
def bad_input(tmp_path) -> Path:
    """A CSV log whose label column holds a 7 on data row 2."""
    log = tmp_path / "log.csv"
    log.write_text("uid,ad_id,ts,placement,click\nu1,a1,1767225600,0,1\nu2,a2,1767229200,1,7\n")
    return _write(tmp_path / "run.yaml", {"root": "r", "source": {"kind": "file", "path": "log.csv", "spec": SPEC}})


COMMANDS = {
    "run": ["run"],
    "stage": ["stage", "ingest"],
    "backfill": ["backfill", "--from", "2026-01-01", "--to", "2026-01-02"],
    "ledger": ["ledger"],
    "serve": ["serve", "retrieval", "--port", "0"],
    "validate": ["validate"],
    "experiment": ["experiment", "transfer"],
}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    return lines[-1]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_config_exits_2_with_one_line(command, bad_config, capsys):
    assert cli([*COMMANDS[command], "--config", str(bad_config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "config error" in line and "pretrain.train.epoch: unknown key" in line


@pytest.mark.parametrize("command", ["run", "stage", "backfill", "validate", "experiment"])
def test_bad_input_file_exits_5_naming_file_row_and_value(command, bad_input, capsys):
    assert cli([*COMMANDS[command], "--config", str(bad_input)]) == 5
    line = _one_error_line(capsys.readouterr().err)
    assert "bad input" in line and "log.csv" in line and "click" in line and "7" in line


def test_debug_adds_the_traceback(bad_input, capsys):
    assert cli(["--debug", "validate", "--config", str(bad_input)]) == 5
    assert "Traceback" in capsys.readouterr().err


def test_validate_clean_log_exits_0(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("uid,ad_id,ts,placement,click\nu1,a1,1767225600,0,1\nu2,a2,1767229200,1,\n")
    cfg = _write(tmp_path / "run.yaml", {"root": "r", "source": {"kind": "file", "path": "log.csv", "spec": SPEC}})
    assert cli(["validate", "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["valid"] is True
    assert not (tmp_path / "r").exists()  # validate writes nothing


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    cfg = _write(
        tmp_path / "conf" / "run.yaml",
        {"root": "../runs/x", "source": {"kind": "file", "path": "data/log.csv", "spec_path": "spec.yaml"}},
    )
    monkeypatch.chdir("/")
    got = load_run_config(cfg)
    assert got.root == (tmp_path / "runs" / "x").resolve()
    assert got.source.path == (tmp_path / "conf" / "data" / "log.csv").resolve()
    assert got.source.spec_path == (tmp_path / "conf" / "spec.yaml").resolve()
    s3 = _write(tmp_path / "s3.yaml", {"storage": {"tables_uri": "s3://my-bucket/t"}, "root": "/abs/root"})
    assert load_run_config(s3).storage.tables_uri == "s3://my-bucket/t" and load_run_config(s3).root == Path(
        "/abs/root"
    )


def test_set_overrides_any_key_and_names_a_bad_one(tmp_path):
    cfg = _write(tmp_path / "run.yaml", {"root": str(tmp_path), "pretrain": {"train": {"epochs": 3}}})
    got = load_run_config(
        cfg,
        None,
        [
            "pretrain.train.epochs=1",
            "split.valid_days=2",
            "downstream.representations=[user_ur, item_ir]",
            "ds=2026-01-03",
        ],
    )
    assert got.pretrain.train.epochs == 1 and got.split.valid_days == 2 and got.ds == "2026-01-03"
    assert got.downstream.representations == ["user_ur", "item_ir"]
    from contracts import ConfigError

    with pytest.raises(ConfigError, match=r"pretrain\.train\.epoch: unknown key"):
        load_run_config(cfg, None, ["pretrain.train.epoch=1"])
    with pytest.raises(ConfigError, match=r"--set 'epochs': expected key\.path=value"):
        load_run_config(cfg, None, ["epochs"])
    with pytest.raises(ConfigError, match=r"--set root\.x: root is .* not a mapping"):
        load_run_config(cfg, None, ["root.x=1"])


def test_backfill_skips_days_without_a_split_and_says_so(tmp_path, capsys):
    cfg = _write(
        tmp_path / "run.yaml", {"root": str(tmp_path / "r"), "source": GEN, "split": {"valid_days": 1, "test_days": 1}}
    )
    # days 1 and 2 of the 4-day log cannot hold train + valid + test
    assert cli(["backfill", "--config", str(cfg), "--from", "2026-01-01", "--to", "2026-01-02"]) == 2
    err = capsys.readouterr().err
    assert "skip ds=2026-01-01: split: the log has 1 day(s)" in err and "skip ds=2026-01-02" in err
    assert "no day in 2026-01-01..2026-01-02 can have a split" in err


def test_entry_point_version_and_json_logs(tmp_path):
    """The installed console script: --version; `--log-format json` prints JSON objects only
    (timezone-aware timestamps) on stderr and the result object on stdout."""
    exe = Path(sys.executable).with_name("lfm4ads")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("lfm4ads ")
    cfg = _write(tmp_path / "run.yaml", {"root": "r", "source": GEN, "split": {"valid_days": 1, "test_days": 1}})
    proc = subprocess.run(
        [str(exe), "stage", "ingest", "--config", str(cfg), "--log-format", "json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from datetime import datetime

    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(datetime.fromisoformat(r["ts"]).tzinfo is not None for r in lines)
    assert any(r.get("event") == "done" and r.get("step") == "ingest" for r in lines)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ds"] == "2026-01-04" and (tmp_path / "r" / "logs").is_dir()  # root relative to the file


def test_each_documented_error_maps_to_its_exit_code():
    import signal

    from contracts import ConfigError, IndexPromotionRefused, InputError
    from engines.storage import StorageError
    from pipelines.exits import classify
    from pipelines.gates import GateFailed
    from pipelines.lock import RunLocked
    from pipelines.preflight import InputFileError
    from pipelines.rollover import RolloverError
    from pipelines.signals import Interrupted

    cases = [
        (ConfigError("a\n  b.c: unknown key"), 2),
        (StorageError("bucket"), 2),
        (InputError("f.csv row 3"), 5),
        (InputFileError("part-0.parquet truncated"), 5),
        (GateFailed("2026-01-02", ["coverage"]), 3),
        (RunLocked("held"), 4),
        (RolloverError("residual"), 6),
        (IndexPromotionRefused("worse"), 7),
        (Interrupted(signal.SIGINT), 130),
        (Interrupted(signal.SIGTERM), 143),
        (RuntimeError("x"), 1),
    ]
    for exc, code in cases:
        got, _, line = classify(exc)
        assert got == code, exc
        assert "\n" not in line
    assert (
        classify(ConfigError("f.yaml: 1 invalid key(s)\n  b.c: unknown key"))[2]
        == "f.yaml: 1 invalid key(s); b.c: unknown key"
    )


def test_progress_records_become_bars_with_eta_or_throttled_lines():
    import io
    import logging

    from rich.console import Console

    from engines.progress import PROGRESS_LOGGER, report_progress
    from pipelines.output import _ProgressHandler

    logger = logging.getLogger(PROGRESS_LOGGER)
    for terminal in (True, False):
        buf = io.StringIO()
        handler = _ProgressHandler(Console(file=buf, force_terminal=terminal, width=160))
        logger.addHandler(handler)
        try:
            with_level = logger.level
            logger.setLevel(logging.INFO)
            for epoch in range(1, 4):
                report_progress("pretrain.epoch", epoch, 3, loss=0.5 / epoch)
        finally:
            handler.stop()
            logger.removeHandler(handler)
            logger.setLevel(with_level)
        text = buf.getvalue()
        if terminal:
            assert "pretrain.epoch" in text and "ETA" in text and "3/3" in text and "loss=0.1667" in text
        else:  # a log file: the first and the last line of the task, not one per record
            assert text.splitlines() == ["pretrain.epoch 1/3 loss=0.5", "pretrain.epoch 3/3 loss=0.1667"]


def test_text_mode_shows_each_step_once_and_the_log_file_keeps_the_record(tmp_path):
    """The CLI prints "✓ step (N s)" itself: run_pipeline's own "step done" record goes to
    the log file only in text mode (it was a second line per step); json mode keeps it."""
    import io
    import logging

    from pipelines.output import Output

    log = logging.getLogger("lfm4ads")
    for fmt in ("text", "json"):
        out = Output(fmt)
        out.stderr = buf = io.StringIO()
        out._configure()  # the console handler on the buffer
        path = out.keep_noise_in(tmp_path / fmt, redirect_fd=False)
        try:
            log.info("step %s done in %.1fs", "extract", 1.0, extra={"step": "extract", "event": "done"})
            log.info("something else happened", extra={"step": "extract"})
        finally:
            out.close()
            for h in list(logging.getLogger().handlers):
                if getattr(h, "baseFilename", None) == str(path) or getattr(h, "stream", None) is buf:
                    logging.getLogger().removeHandler(h)
        text = buf.getvalue()
        assert "something else happened" in text
        assert ("step extract done" in text) == (fmt == "json")
        assert "step extract done" in path.read_text()
