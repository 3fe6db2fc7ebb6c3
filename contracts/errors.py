"""Errors every stage may raise and the CLI maps to documented exit codes.

Declared once here so that an early stage (datasources, retrieval) can raise what the
CLI (pipelines) turns into an exit code without importing a later stage.

| exit | meaning |
|---|---|
| 2 | bad config (:class:`contracts.ConfigError`) |
| 3 | a quality gate stopped the day before publishing |
| 4 | another run holds the run root |
| 5 | a bad input file (:class:`InputError`): one line naming file, column, row and value |
| 6 | the rollover gate refused aligning a new model version |
| 7 | a new index version was built and kept but not promoted (:class:`IndexPromotionRefused`) |
| 130 / 143 | interrupted by SIGINT / SIGTERM (nothing partial published) |
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_BAD_CONFIG = 2
EXIT_GATE = 3
EXIT_LOCKED = 4
EXIT_BAD_INPUT = 5
EXIT_ROLLOVER_REFUSED = 6
EXIT_PROMOTION_REFUSED = 7
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class InputError(ValueError):
    """A bad input file or row. The message is one line naming the file, the column (and
    the spec key), the row and the value; the CLI prints it and exits 5."""

    exit_code = EXIT_BAD_INPUT


class IndexPromotionRefused(RuntimeError):
    """A freshly built index version retrieves worse than the live one (or than
    popularity): it is kept on disk, named in the report, and not made CURRENT. Exit 7."""

    exit_code = EXIT_PROMOTION_REFUSED


def one_line(e: BaseException) -> str:
    """The message on one line (a config error lists one bad key per line: joined by '; ')."""
    lines = [" ".join(line.split()) for line in str(e).splitlines()]
    return "; ".join(line for line in lines if line) or type(e).__name__


def run_entry(app: Callable[..., object], prog_name: str) -> None:
    """A stage's own ``python -m`` command (a typer app): an error ends it with one line on
    stderr and its exit code (``exit_code`` of the error, 2 for a bad config, else 1);
    ``LFM4ADS_DEBUG=1`` shows the traceback. ``lfm4ads`` itself maps errors in pipelines/exits.py."""
    from contracts.base import ConfigError

    try:
        app(prog_name=prog_name)
    except Exception as e:  # noqa: BLE001 - every error ends in one line and an exit code
        if os.environ.get("LFM4ADS_DEBUG"):
            raise
        code = getattr(e, "exit_code", EXIT_BAD_CONFIG if isinstance(e, ConfigError) else 1)
        print(f"{prog_name}: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        sys.exit(code)
