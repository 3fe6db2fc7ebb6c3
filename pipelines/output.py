"""What the CLI prints, and where the engines' noise goes.

A person (or a scheduler's log collector) sees only the project's own lines: step starts and
ends, progress bars with an ETA (``engines.progress`` records), warnings, one line per error.
Everything else a run produces (Spark's log4j lines, py4j ``ConnectionResetError``
tracebacks at shutdown, Ray's core_worker errors, library deprecation warnings) is kept in
a log file under the run root, ``<root>/logs/lfm4ads-<UTC time>-<pid>.log``: the process's
file descriptor 2 is pointed at that file (so the JVM's and Ray's native writes land there
too) and the CLI writes to a duplicate of the original stderr. ``--debug`` turns this off.

``--log-format json``: every line on stderr is one JSON object (``ts`` timezone-aware ISO
8601, ``level``, ``logger``, ``msg`` and the record's fields: ds, step, event, seconds,
progress counts); stdout carries the final summary object.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from engines.progress import PROGRESS_LOGGER

# loggers whose records a person sees; anything else goes to the log file only
PROJECT_LOGGERS = (
    "lfm4ads",
    "contracts",
    "datasources",
    "engines",
    "pretrain",
    "extract",
    "transfer",
    "downstream",
    "retrieval",
    "pipelines",
    "benchmarks",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts (UTC, ISO 8601 with offset), level, logger, msg and
    the record's ``extra`` fields (ds, step, event, seconds, ...), for log shippers."""

    _STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        out = {"ts": ts, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# step events the CLI shows as its own line in text mode (the log file keeps the records)
SHOWN_AS_LINES = ("done", "reused")


class _ProjectOnly(logging.Filter):
    def __init__(self, progress: bool):
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS_LOGGER:
            return self.progress
        if not self.progress and getattr(record, "event", None) in SHOWN_AS_LINES:
            return False  # text mode: the CLI prints its own "✓ step (N s)" line for these
        return record.name.split(".")[0] in PROJECT_LOGGERS


class _ProgressHandler(logging.Handler):
    """``engines.progress`` records -> rich bars (task, count, fields such as loss, ETA) on a
    terminal; elsewhere a plain line per record, at most one per task every 10 s (and the last)."""

    def __init__(self, console):
        super().__init__(logging.INFO)
        self.console = console
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.last_line: dict[str, float] = {}

    def _bars(self):
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        return self.progress

    def emit(self, record: logging.LogRecord) -> None:
        task = getattr(record, "task", "progress")
        done, total = getattr(record, "done", 0), getattr(record, "total", None)
        skip = {"event", "task", "done", "total"}
        info = " ".join(
            f"{k}={_short(v)}"
            for k, v in vars(record).items()
            if k not in skip and k not in JsonFormatter._STD and not k.startswith("_")
        )
        if self.console.is_terminal:
            bars = self._bars()
            if task not in self.tasks:
                self.tasks[task] = bars.add_task(task, total=total, info="")
            bars.update(self.tasks[task], completed=done, total=total, info=info)
            return
        now = time.monotonic()
        if done != total and now - self.last_line.get(task, -1e9) < 10:
            return
        self.last_line[task] = now
        self.console.print(f"{task} {done}/{'?' if total is None else total} {info}", highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks.clear()


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Output:
    """The CLI's output for one command: ``fmt`` text or json, ``debug`` shows everything."""

    def __init__(self, fmt: str = "text", debug: bool = False):
        from rich.console import Console

        self.fmt, self.debug = fmt, debug
        self.stderr = sys.stderr  # replaced by a duplicate of fd 2 when the noise is redirected
        self.console = Console(file=self.stderr, soft_wrap=True)
        self.log_file: Path | None = None
        self.progress: _ProgressHandler | None = None
        self._handlers: list[logging.Handler] = []
        self._early: logging.handlers.MemoryHandler | None = None
        self._configure()

    def _configure(self) -> None:
        root = logging.getLogger()
        for h in self._handlers:
            root.removeHandler(h)
            logging.getLogger(PROGRESS_LOGGER).removeHandler(h)
        self._handlers = []
        console = logging.StreamHandler(self.stderr)
        if self.fmt == "json":
            console.setFormatter(JsonFormatter())
            console.addFilter(_ProjectOnly(progress=True))
        else:
            console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            console.addFilter(_ProjectOnly(progress=False))
            self.progress = _ProgressHandler(self.console)
            prog_logger = logging.getLogger(PROGRESS_LOGGER)
            prog_logger.addHandler(self.progress)
            self._handlers.append(self.progress)
        if self.debug:  # everything, from every library
            console.filters.clear()
            if self.fmt != "json":
                console.addFilter(lambda r: r.name != PROGRESS_LOGGER)
        root.addHandler(console)
        self._handlers.append(console)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)  # warnings -> 'py.warnings' logger -> the log file only
        warnings.simplefilter("default")  # each deprecation once, into the file (not the screen)
        if self._early is None:
            # records from before the run root is known (import-time warnings) wait for the file
            self._early = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
            root.addHandler(self._early)

    def keep_noise_in(self, root: str | Path, redirect_fd: bool = True) -> Path:
        """Open ``<root>/logs/lfm4ads-<time>-<pid>.log``: every logger writes there; with
        ``redirect_fd`` (the real CLI, not --debug) fd 2 points there too, so the JVM's, Ray's
        and any library's stderr output lands in the file and the person sees the CLI's lines."""
        if self.log_file is not None:
            return self.log_file
        folder = Path(root) / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.log_file = folder / f"lfm4ads-{stamp}-{os.getpid()}.log"
        fh = logging.FileHandler(self.log_file)
        fh.setFormatter(
            JsonFormatter()
            if self.fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.getLogger().addHandler(fh)
        if redirect_fd and not self.debug:
            sys.stderr.flush()
            real = os.dup(2)
            os.set_inheritable(real, False)  # the JVM and Ray's processes get the file, not the terminal
            fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND)
            os.dup2(fd, 2)
            os.close(fd)
            self.stderr = os.fdopen(real, "w", buffering=1)
            from rich.console import Console

            if self.progress is not None:
                self.progress.stop()
            self.console = Console(file=self.stderr, soft_wrap=True)
            self._configure()
            logging.getLogger().addHandler(fh)
        self._handlers.append(fh)
        if self._early is not None:
            self._early.setTarget(fh)
            self._early.flush()
            logging.getLogger().removeHandler(self._early)
            self._early.close()
        return self.log_file

    # --- what the CLI itself says ---------------------------------------------------------
    def say(self, msg: str, style: str | None = None, **fields) -> None:
        """A line for the person (text) or one JSON object (json) on stderr."""
        if self.fmt == "json":
            self._json("INFO", msg, **fields)
        else:
            from rich.markup import escape

            self.console.print(
                f"[{style}]{escape(msg)}[/{style}]" if style else msg, highlight=False, markup=bool(style)
            )

    def error(self, msg: str, **fields) -> None:
        if self.fmt == "json":
            self._json("ERROR", msg, **fields)
        else:
            from rich.markup import escape

            self.console.print(f"[red]{escape(msg)}[/red]", highlight=False)

    def _json(self, level: str, msg: str, **fields) -> None:
        ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.stderr.write(
            json.dumps({"ts": ts, "level": level, "logger": "lfm4ads.cli", "msg": msg, **fields}, default=str) + "\n"
        )
        self.stderr.flush()

    def result(self, obj: dict) -> None:
        """The command's result: one JSON object on stdout (a scheduler parses the last line)."""
        print(json.dumps(obj, default=str), flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        root = logging.getLogger()
        for h in [*self._handlers, *([self._early] if self._early else [])]:
            root.removeHandler(h)
            logging.getLogger(PROGRESS_LOGGER).removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
