"""Exceptions -> the documented exit codes (contracts/errors.py) and one readable line.

Every ``lfm4ads`` command ends through :func:`classify`: a bad config is 2, a quality gate
3, a held run root 4, a bad input file 5, a refused rollover 6, a refused index promotion
7, SIGINT/SIGTERM 130/143, anything else 1. The line names what to fix; the traceback goes
to the run's log file, and to the screen only with ``--debug``.
"""

from __future__ import annotations

from contracts.errors import (
    EXIT_BAD_CONFIG,
    EXIT_BAD_INPUT,
    EXIT_GATE,
    EXIT_LOCKED,
    EXIT_PROMOTION_REFUSED,
    EXIT_ROLLOVER_REFUSED,
    EXIT_SIGINT,
    one_line,
)


def classify(e: BaseException) -> tuple[int, str, str]:
    """``(exit code, kind, one-line message)`` for an exception that ended a command."""
    from pydantic import ValidationError

    from contracts import ConfigError, IndexPromotionRefused, InputError
    from engines.storage import StorageError
    from pipelines.gates import GateFailed
    from pipelines.lock import RunLocked
    from pipelines.rollover import RolloverError

    if isinstance(e, KeyboardInterrupt):
        from pipelines import signals

        code = getattr(e, "exit_code", None) or (128 + signals.received() if signals.received() else EXIT_SIGINT)
        name = "SIGTERM" if code == 143 else "SIGINT"
        return (
            code,
            "stopped",
            (
                f"interrupted by {name}: the running step stopped and is marked 'interrupted' "
                "in the ledger; nothing of it was published; rerun to resume"
            ),
        )
    table = [
        (ConfigError, EXIT_BAD_CONFIG, "config error"),
        (ValidationError, EXIT_BAD_CONFIG, "config error"),
        (StorageError, EXIT_BAD_CONFIG, "storage error"),  # a missing bucket, an unreachable store
        (InputError, EXIT_BAD_INPUT, "bad input"),
        (GateFailed, EXIT_GATE, "quality gate"),
        (RunLocked, EXIT_LOCKED, "locked"),
        (RolloverError, EXIT_ROLLOVER_REFUSED, "rollover refused"),
        (IndexPromotionRefused, EXIT_PROMOTION_REFUSED, "index not promoted"),
    ]
    for cls, code, kind in table:
        if isinstance(e, cls):
            return code, kind, one_line(e)
    return 1, "error", f"{type(e).__name__}: {one_line(e)}"
