"""Validate a raw log against its :class:`DatasetSpec` and turn it into the canonical log.

Every check names the spec key, the column and, for bad values, a row and the value,
and runs before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec
from contracts.dataset import CANONICAL_SEQUENCE, DS, SAMPLE_TYPES
from datasources.log_store import canonical_schema, write_log_day


class LogValidationError(ValueError):
    """The raw log does not satisfy its DatasetSpec."""


def _first_bad_row(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def validate_raw(table: pa.Table, spec: DatasetSpec, source: str = "log") -> None:
    """Check presence and types of every column the spec names, and the values that matter."""
    missing = [(col, key) for col, key in spec.raw_required_columns().items() if col not in table.column_names]
    if missing:
        desc = ", ".join(f"{col!r} (spec key {key})" for col, key in missing)
        raise LogValidationError(f"{source}: missing column(s) {desc}; has {table.column_names}")
    categorical = [spec.user_id, spec.item_id, *spec.user_features, *spec.item_features]
    for col in categorical:
        t = table.schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_dictionary(t)):
            raise LogValidationError(f"{source}: column {col!r} must be string or integer, got {t}")
    for col in (spec.user_id, spec.item_id):
        nulls = table[col].null_count
        if nulls:
            row = _first_bad_row(pc.is_null(table[col]))
            raise LogValidationError(f"{source}: column {col!r} has {nulls} null id(s), first at row {row}")
    t = table.schema.field(spec.event_time).type
    if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
        raise LogValidationError(
            f"{source}: column {spec.event_time!r} (spec key event_time) must be a timestamp or integer "
            f"unix seconds, got {t}"
        )
    if table[spec.event_time].null_count:
        raise LogValidationError(f"{source}: column {spec.event_time!r} has null timestamps")
    t = table.schema.field(spec.scenario).type
    if not pa.types.is_integer(t):
        raise LogValidationError(f"{source}: column {spec.scenario!r} (spec key scenario) must be integer, got {t}")
    known = pa.array(sorted(spec.scenarios), pa.int64())
    unknown = pc.invert(pc.is_in(table[spec.scenario].cast(pa.int64()), value_set=known))
    unknown = pc.fill_null(unknown, True)
    if pc.any(unknown).as_py():
        row = _first_bad_row(unknown)
        raise LogValidationError(
            f"{source}: column {spec.scenario!r} has unknown scenario id {table[spec.scenario][row].as_py()!r} "
            f"at row {row} (known: {sorted(spec.scenarios)})"
        )
    for task in spec.tasks:
        t = table.schema.field(task).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise LogValidationError(f"{source}: label column {task!r} must be numeric 0/1, got {t}")
        vals = table[task].cast(pa.float64())
        bad = pc.fill_null(pc.invert(pc.is_in(vals, value_set=pa.array([0.0, 1.0]))), False)
        if pc.any(bad).as_py():
            row = _first_bad_row(bad)
            raise LogValidationError(
                f"{source}: label column {task!r} has value {vals[row].as_py()!r} at row {row}; labels must be 0, 1 or null"
            )
    if spec.sample_type:
        bad = pc.fill_null(pc.invert(pc.is_in(table[spec.sample_type].cast(pa.string()),
                                              value_set=pa.array(SAMPLE_TYPES))), True)
        if pc.any(bad).as_py():
            row = _first_bad_row(bad)
            raise LogValidationError(
                f"{source}: column {spec.sample_type!r} (spec key sample_type) has "
                f"{table[spec.sample_type][row].as_py()!r} at row {row}; allowed {list(SAMPLE_TYPES)}"
            )
    if spec.sequence.column:
        t = table.schema.field(spec.sequence.column).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            raise LogValidationError(f"{source}: sequence column {spec.sequence.column!r} must be a list, got {t}")


def _to_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col if pa.types.is_string(col.type) else col.cast(pa.string())


def build_sequences(user: np.ndarray, ts: np.ndarray, item: np.ndarray, qualifies: np.ndarray, max_len: int) -> pa.ListArray:
    """For each row, the ``max_len`` most recent qualifying items of the same user strictly
    before its timestamp (oldest first). Inputs: 1-D arrays of length N in any order;
    output aligned with the input rows. Vectorised, O(N log N).
    """
    n = len(user)
    order = np.lexsort((ts, user))
    u, t = user[order], ts[order]
    q = np.asarray(qualifies, dtype=np.int64)[order]
    q_before = np.cumsum(q) - q  # qualifying rows before each sorted row
    idx = np.arange(n)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1])
    # Rows sharing a timestamp must not see each other: count up to their group's first row.
    before = q_before[np.maximum.accumulate(np.where(new_group, idx, 0))]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    count = before - q_before[np.maximum.accumulate(np.where(new_user, idx, 0))]
    q_items = item[order][q.astype(bool)]
    lengths = np.empty(n, dtype=np.int64)
    lengths[order] = np.minimum(count, max_len)
    ends = np.empty(n, dtype=np.int64)
    ends[order] = before
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    values = q_items[np.repeat(ends - lengths, lengths) + within]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.string()))


def canonicalize(table: pa.Table, spec: DatasetSpec, source: str = "log") -> pa.Table:
    """Raw table -> canonical table (schema per contracts/dataset.py), validated first."""
    validate_raw(table, spec, source)
    canon = spec.canonical()
    cols: dict[str, pa.ChunkedArray] = {}
    cols["user_id"] = _to_string(table[spec.user_id])
    cols["item_id"] = _to_string(table[spec.item_id])
    et = table[spec.event_time]
    if pa.types.is_integer(et.type):
        et = pc.multiply(et.cast(pa.int64()), 1_000_000).cast(pa.timestamp("us", tz="UTC"))
    else:
        et = et.cast(pa.timestamp("us", tz=et.type.tz or "UTC"))
        et = et.cast(pa.timestamp("us", tz="UTC"))
    cols["event_time"] = et
    cols[DS] = pc.strftime(et, format="%Y-%m-%d")
    cols["scenario"] = table[spec.scenario].cast(pa.int32())
    if spec.sample_type:
        cols["sample_type"] = table[spec.sample_type].cast(pa.string())
    else:
        cols["sample_type"] = pa.chunked_array([pa.array(["ad"] * table.num_rows, pa.string())])
    for task in spec.tasks:
        cols[task] = table[task].cast(pa.float32())
    for f in (*spec.user_features, *spec.item_features):
        cols[f] = _to_string(table[f])
    if spec.sequence.column:
        seq = table[spec.sequence.column].combine_chunks()
        cols[CANONICAL_SEQUENCE] = seq.cast(pa.list_(pa.string()))
    else:
        field = spec.sequence.item_field
        item_vals = cols["item_id"] if field == spec.item_id else cols[field]
        if spec.sequence.positive_task:
            qual = pc.fill_null(pc.equal(cols[spec.sequence.positive_task], 1.0), False)
            qual = np.asarray(qual.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            qual = np.ones(table.num_rows, dtype=np.int64)
        cols[CANONICAL_SEQUENCE] = build_sequences(
            np.asarray(cols["user_id"].to_numpy(zero_copy_only=False)).astype(str),
            et.cast(pa.int64()).to_numpy(),
            np.asarray(item_vals.to_numpy(zero_copy_only=False)).astype(str),
            qual,
            canon.sequence.max_len,
        )
    out = pa.table(cols)
    schema = canonical_schema(spec)
    return out.select(schema.names).cast(schema)


def ingest(table: pa.Table, spec: DatasetSpec, log_path: str | Path, source: str = "log") -> list[str]:
    """Validate and write ``table`` into the canonical log at ``log_path``; one commit per day.

    Everything is validated and canonicalised before the first day is written.
    Returns the days written.
    """
    canon = canonicalize(table, spec, source)
    if canon.num_rows == 0:
        raise LogValidationError(f"{source}: no rows")
    days = sorted(set(canon[DS].to_pylist()))
    for d in days:
        day = canon.filter(pc.equal(canon[DS], d))
        write_log_day(log_path, day, d, spec)
    return days
