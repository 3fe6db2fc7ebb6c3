"""The ``lfm4ads`` typer app, its global options and the pieces every command shares:
the per-process command state, output, config loading and the common options."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from pipelines.output import Output

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="lfm4ads: foundation-model representations for ads ranking and retrieval.",
)

# state of the command being run (one per process): its output, --debug, whether fd 2 may
# be redirected (only in the real entry point, never inside a test's process)
_CTX: dict = {"out": None, "debug": False, "redirect": False}


class LogFormat(str, Enum):
    """``--log-format``: person-readable lines, or one JSON object per line."""

    text = "text"
    json = "json"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lfm4ads")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"lfm4ads {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="LFM4ADS_DEBUG",
        help="Show tracebacks and every library's output (no log-file redirect).",
    ),
):
    """lfm4ads: foundation-model representations for ads ranking and retrieval."""
    _CTX["debug"] = debug


def _output(log_format: LogFormat | str = LogFormat.text) -> Output:
    out = Output(LogFormat(log_format).value, _CTX["debug"])
    _CTX["out"] = out
    return out


def _load(config: Optional[Path], root: Optional[Path], ds: Optional[str] = None, sets: Optional[list] = None):
    """The RunConfig: the file's relative paths resolve against the file; ``--root`` (relative
    to the working directory), ``--ds`` and ``--set key.path=value`` override it."""
    from pipelines.config import load_run_config

    over = {}
    if root:
        over["root"] = str(Path(root).resolve())
    if ds:
        over["ds"] = ds
    return load_run_config(config, over, list(sets or []))


def _engines_output(cfg) -> None:
    """From here on the engines may start: their noise goes to the run's log file."""
    _CTX["out"].keep_noise_in(cfg.root, redirect_fd=_CTX["redirect"])


CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    envvar="LFM4ADS_CONFIG",
    help="RunConfig YAML (see configs/); its relative paths resolve against the file.",
)
ROOT = typer.Option(None, "--root", envvar="LFM4ADS_ROOT", help="Override the run root folder.")
DS = typer.Option(None, "--ds", help="The day to run for (default: the log's last day).")
FORCE = typer.Option(False, "--force", help="Redo finished work of the steps asked for.")
WAIT = typer.Option(False, "--wait", help="Wait for a concurrent run of the same root instead of exiting.")
LOG_FORMAT = typer.Option(
    LogFormat.text,
    "--log-format",
    envvar="LFM4ADS_LOG_FORMAT",
    help="text, or json (one object per line: ts, level, ds, step, event, seconds).",
)
SET = typer.Option(
    None,
    "--set",
    metavar="KEY.PATH=VALUE",
    help="Override one config key (repeatable), e.g. --set pretrain.train.epochs=1.",
)
