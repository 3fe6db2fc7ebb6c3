"""Progress of long steps (training epochs, extracted rows, aggregated days).

Stages report through one logger, ``lfm4ads.progress``, with structured fields; the CLI
turns the records into progress bars with an ETA (text) or JSON objects (``--log-format
json``). A stage never draws anything itself, so library use stays quiet.
"""

from __future__ import annotations

import logging

PROGRESS_LOGGER = "lfm4ads.progress"
_log = logging.getLogger(PROGRESS_LOGGER)


def report_progress(task: str, done: int, total: int | None, **fields: float | int | str) -> None:
    """Record that ``done`` of ``total`` units of ``task`` are finished.

    ``task`` names the loop (``"pretrain.epoch"``, ``"extract.rows"``, ``"aggregate.days"``);
    ``fields`` carry what a person wants beside the count (``loss=0.41``, ``ds="2026-01-03"``).
    The record's ``extra`` holds ``event="progress"``, ``task``, ``done``, ``total`` and the fields.
    """
    _log.info(
        "%s %d/%s %s",
        task,
        done,
        "?" if total is None else total,
        " ".join(f"{k}={v}" for k, v in fields.items()),
        extra={"event": "progress", "task": task, "done": done, "total": total, **fields},
    )
