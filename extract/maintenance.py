"""Maintenance of the published tables: compact small files, vacuum old ones (>= 7 days kept)."""

from __future__ import annotations

from pathlib import Path

from contracts import REPRESENTATION_TABLES
from engines import delta_io, storage


def maintain_tables(
    tables_root: str | Path, retention_hours: int = 168, days: list[str] | None = None, dry_run: bool = False
) -> dict[str, dict]:
    """Compact ``days`` (all when None) of every representation table under ``tables_root``,
    then vacuum files unreferenced for ``retention_hours`` (refused below 168 h, so time
    travel to any version of the last 7 days keeps working). Returns per-table metrics.

    Each publish already vacuums what a republish superseded once it is older than
    ``AggregateConfig.vacuum_retention_hours`` (:func:`extract.publishing.vacuum_after_publish`);
    this is for the files compaction replaces and for tables published with that set to None."""
    if retention_hours < 168:
        raise ValueError(f"retention_hours={retention_hours}: keep at least 7 days (168 h) of history")
    out = {}
    for name in REPRESENTATION_TABLES:
        path = storage.join(tables_root, name)  # a local folder, a mounted one or a URI
        if not delta_io.exists(path):
            continue
        m = {"compact": {}} if dry_run else {"compact": delta_io.compact(path, days)}
        m["vacuumed"] = len(delta_io.vacuum(path, retention_hours, dry_run=dry_run))
        out[name] = m
    return out
