"""Input sanity: one raw batch -> validated canonical columns (all but ``hist_seq``).

Every refusal is an :class:`~contracts.InputError` whose one line names the file, the
column (and the spec key), the row (0-based data row of that file) and the value.
Checks a user may want to proceed past (duplicates, future events) follow
``spec.checks`` and are counted in :class:`Findings` instead.

The parts: raw columns to typed ones and the one-line error (:mod:`datasources.column_parse`),
event times and days (:mod:`datasources.event_time`); here the batch as a whole, the
day fingerprint and exact-duplicate handling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec, InputError
from contracts.dataset import CANONICAL_SEQUENCE, DS, SAMPLE_TYPES
from datasources.column_parse import (
    INT_RE,
    NUM_RE,
    first_row,
    id_strings,
    input_error,
    is_texty,
    parse_numbers,
    plain_column,
    show_value,
)
from datasources.event_time import day_strings, future_mask, parse_event_time

FILE_COL, ROW_COL = "__file", "__row"  # where each row came from, for per-day messages


@dataclass
class Findings:
    """What the checks saw across a source (per-check counts, the detected unit)."""

    unit: str | None = None
    rows: int = 0
    future: int = 0
    duplicates: int = 0
    first_future: str = ""
    first_duplicate: str = ""


def check_columns(have: list[str], spec: DatasetSpec, file: str, csv_header: bool = False) -> None:
    """Every column the spec names is present, else one line naming them and their spec keys."""
    missing = [(c, k) for c, k in spec.raw_required_columns().items() if c not in have]
    if missing:
        desc = ", ".join(f"{c!r} (spec key {k})" for c, k in missing)
        hint = "; if the file has no header row, name its columns in the spec's csv.columns" if csv_header else ""
        raise InputError(f"{file}: missing column(s) {desc}; has {have[:20]}{hint}")


def canonical_batch(
    raw: pa.Table, spec: DatasetSpec, file: str, offset: int, file_index: int, found: Findings, now_us: int
) -> pa.Table:
    """Check and convert one raw batch (spec column names) into canonical columns + origin columns.

    ``offset`` is the batch's first data row in ``file``. Rows in the future are dropped
    here when ``checks.future_events`` is 'drop' (counted in ``found``).
    """
    check_columns(raw.column_names, spec, file)
    n = raw.num_rows
    cols: dict[str, pa.ChunkedArray] = {}
    mx = spec.checks.max_id_length
    cols["user_id"] = id_strings(raw[spec.user_id], file, spec.user_id, "user_id", offset, mx, False)
    cols["item_id"] = id_strings(raw[spec.item_id], file, spec.item_id, "item_id", offset, mx, False)
    et = parse_event_time(raw[spec.event_time], spec, file, offset, found, now_us)
    cols["event_time"] = et
    cols[DS] = day_strings(et, spec.timezone)
    scen = parse_numbers(raw[spec.scenario], file, spec.scenario, "scenario", offset, pa.int64(), INT_RE)
    unknown = pc.fill_null(pc.invert(pc.is_in(scen, value_set=pa.array(sorted(spec.scenarios), pa.int64()))), True)
    row = first_row(unknown)
    if row is not None:
        raise input_error(
            file,
            spec.scenario,
            "scenario",
            offset + row,
            scen[row].as_py(),
            f"unknown scenario id (known: {sorted(spec.scenarios)})",
        )
    cols["scenario"] = scen.cast(pa.int32())
    if spec.sample_type:
        st = plain_column(raw[spec.sample_type]).cast(pa.string())
        bad = pc.fill_null(pc.invert(pc.is_in(st, value_set=pa.array(SAMPLE_TYPES))), True)
        row = first_row(bad)
        if row is not None:
            raise input_error(
                file, spec.sample_type, "sample_type", offset + row, st[row].as_py(), f"allowed {list(SAMPLE_TYPES)}"
            )
        cols["sample_type"] = st
    else:
        cols["sample_type"] = pa.chunked_array([pa.repeat(pa.scalar("ad"), n)])
    for task in spec.tasks:
        vals = parse_numbers(raw[task], file, task, "tasks", offset, pa.float64(), NUM_RE)
        # null = the task does not apply to this row (e.g. no conversion label without a click)
        bad = pc.and_(pc.is_valid(vals), pc.invert(pc.is_in(vals, value_set=pa.array([0.0, 1.0]))))
        row = first_row(bad)
        if row is not None:
            raise input_error(file, task, "tasks", offset + row, vals[row].as_py(), "labels must be 0, 1 or null")
        cols[task] = vals.cast(pa.float32())
    for key, feats in (("user_features", spec.user_features), ("item_features", spec.item_features)):
        for f in feats:
            cols[f] = id_strings(raw[f], file, f, key, offset, mx, True)
    if spec.sequence.column:
        seq = plain_column(raw[spec.sequence.column])
        if not (pa.types.is_list(seq.type) or pa.types.is_large_list(seq.type)):
            raise input_error(
                file, spec.sequence.column, "sequence.column", None, None, f"must be a list, got {seq.type}"
            )
        cols[CANONICAL_SEQUENCE] = seq.cast(pa.list_(pa.string()))
    cols[FILE_COL] = pa.chunked_array([pa.array(np.full(n, file_index, np.int32))])
    cols[ROW_COL] = pa.chunked_array([pa.array(np.arange(offset, offset + n, dtype=np.int64))])
    out = pa.table(cols)
    fut = future_mask(et, now_us)
    k = int(pc.sum(fut).as_py() or 0)
    if k:
        row = first_row(fut)
        if spec.checks.future_events == "fail":
            raise input_error(
                file,
                spec.event_time,
                "event_time",
                offset + row,
                raw[spec.event_time][row].as_py(),
                f"in the future (later than now + checks.future_tolerance_hours="
                f"{spec.checks.future_tolerance_hours:g}); {k} such row(s) in this batch; "
                f"set checks.future_events: warn or drop to proceed",
            )
        if not found.first_future:
            found.first_future = f"{file} row {offset + row} ({et[row]})"
        found.future += k
        if spec.checks.future_events == "drop":
            out = out.filter(pc.invert(fut))
    found.rows += n
    return out


def day_fingerprint(day: pa.Table) -> str:
    """Content hash of a day's canonical rows (order-sensitive; origin columns excluded)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(c for c in day.column_names if c not in (FILE_COL, ROW_COL)):
        col = day[name].combine_chunks() if isinstance(day[name], pa.ChunkedArray) else day[name]
        h.update(name.encode())
        h.update(np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), dtype=bool).tobytes())
        t = col.type
        if pa.types.is_list(t):
            h.update(np.asarray(pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)).tobytes())
            col = pc.list_flatten(col)
            t = col.type
        if is_texty(t):
            b = pa.concat_arrays([col.fill_null("").cast(pa.large_string())]) if len(col) else col
            if len(b):
                offs = np.frombuffer(b.buffers()[1], np.int64)[b.offset : b.offset + len(b) + 1]
                h.update((offs - offs[0]).tobytes())
                h.update(memoryview(b.buffers()[2])[offs[0] : offs[-1]])
        else:
            v = col.cast(pa.int64()) if pa.types.is_timestamp(t) else col
            h.update(np.asarray(v.fill_null(0).to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()


def dedupe(day: pa.Table, spec: DatasetSpec, files: list[str], found: Findings) -> pa.Table:
    """Exact duplicate rows (all canonical columns equal) per ``checks.duplicates``; first kept."""
    if spec.checks.duplicates == "keep" or day.num_rows < 2:
        return day
    ident = ["user_id", "event_time", "item_id"]
    if day.select(ident).group_by(ident, use_threads=False).aggregate([]).num_rows == day.num_rows:
        return day  # no two rows share user, time and item: no exact duplicates (the common case)
    keys = [c for c in day.column_names if c not in (FILE_COL, ROW_COL, CANONICAL_SEQUENCE)]
    idx = pa.array(np.arange(day.num_rows, dtype=np.int64))
    g = day.select(keys).append_column("__i", idx).group_by(keys, use_threads=False).aggregate([("__i", "min")])
    if g.num_rows == day.num_rows:
        return day
    keep = np.sort(g["__i_min"].to_numpy())
    dup_mask = np.ones(day.num_rows, dtype=bool)
    dup_mask[keep] = False
    first = int(np.flatnonzero(dup_mask)[0])
    where = f"{files[day[FILE_COL][first].as_py()]} row {day[ROW_COL][first].as_py()}"
    k = day.num_rows - len(keep)
    if spec.checks.duplicates == "fail":
        raise InputError(
            f"{where}: exact duplicate row ({k} duplicate(s) on {day[DS][0].as_py()}; first: "
            f"user {show_value(day['user_id'][first].as_py())}, item {show_value(day['item_id'][first].as_py())}, "
            f"{day['event_time'][first]}); set checks.duplicates: drop to drop them"
        )
    if not found.first_duplicate:
        found.first_duplicate = where
    found.duplicates += k
    return day.take(pa.array(keep))
