"""Validate an in-memory raw log against its :class:`DatasetSpec` and write the canonical log.

The checks are :mod:`datasources.checks` (each names the file, column, spec key, row and
value) and run before anything is written; writing is :mod:`datasources.incremental`
(one Delta commit for all the days).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from contracts import DatasetSpec, InputError
from contracts.dataset import CANONICAL_SEQUENCE
from datasources.checks import FILE_COL, ROW_COL, Findings, canonical_batch
from datasources.incremental import Input, run_ingest
from datasources.log_store import canonical_schema
from datasources.sequences import build_sequences

LogValidationError = InputError  # the historical name; exit code 5 through the CLI

__all__ = ["LogValidationError", "build_sequences", "canonicalize", "ingest"]


def canonicalize(table: pa.Table, spec: DatasetSpec, source: str = "log", now: datetime | None = None) -> pa.Table:
    """Raw table -> canonical table (schema per contracts/dataset.py), rows in input order.

    In memory, for tables that fit; :func:`ingest` / ``materialize`` go day by day."""
    now = now or datetime.now(UTC)
    now_us = int(now.timestamp() * 1e6 + spec.checks.future_tolerance_hours * 3600e6)
    out = canonical_batch(table, spec, source, 0, 0, Findings(), now_us).drop_columns([FILE_COL, ROW_COL])
    canon = spec.canonical()
    if CANONICAL_SEQUENCE not in out.column_names:
        import numpy as np
        import pyarrow.compute as pc

        field = canon.sequence.item_field
        item = out[field]
        q = pc.is_valid(item)
        if canon.sequence.positive_task:
            q = pc.and_(q, pc.fill_null(pc.equal(out[canon.sequence.positive_task], 1.0), False))
        seq = build_sequences(
            out["user_id"],
            out["event_time"].cast(pa.int64()).to_numpy(),
            item,
            np.asarray(q.to_numpy(zero_copy_only=False), dtype=np.int64),
            canon.sequence.max_len,
        )
        out = out.append_column(CANONICAL_SEQUENCE, seq)
    schema = canonical_schema(spec)
    return out.select(schema.names).cast(schema)


def ingest(
    table: pa.Table, spec: DatasetSpec, log_path: str | Path, source: str = "log", force: bool = False
) -> list[str]:
    """Validate ``table`` and write it into the canonical log at ``log_path`` in one commit.

    Returns the days written (new or changed days and the days after them)."""
    if table.num_rows == 0:
        raise InputError(f"{source}: no rows")

    def batches():
        for start in range(0, table.num_rows, 1_000_000):
            yield table.slice(start, 1_000_000)

    rep = run_ingest([Input(source, None, batches)], spec, log_path, source=source, force=force)
    return rep.ingested_days
