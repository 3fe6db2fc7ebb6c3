"""Input sanity: one raw batch -> validated canonical columns (all but ``hist_seq``).

Every refusal is an :class:`~contracts.InputError` whose one line names the file, the
column (and the spec key), the row (0-based data row of that file) and the value.
Checks a user may want to proceed past (duplicates, future events) follow
``spec.checks`` and are counted in :class:`Findings` instead.

Timestamps: a timestamp column (with zone: absolute; without: local time in
``spec.timezone``), ISO-8601 strings (with or without offset), or integers whose unit
(s/ms/us/ns) is the one that puts them in ``checks.min_time..max_time`` (the units are
1000x apart and the range spans less than that, so at most one fits) or
``spec.event_time_unit``. ``ds`` is the day in ``spec.timezone``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec, InputError
from contracts.dataset import CANONICAL_SEQUENCE, DS, SAMPLE_TYPES

UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}  # -> microseconds (ns: divide by 1000)
FILE_COL, ROW_COL = "__file", "__row"  # where each row came from, for per-day messages
_INT = r"^\s*[+-]?\d+\s*$"
_NUM = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


@dataclass
class Findings:
    """What the checks saw across a source (per-check counts, the detected unit)."""

    unit: str | None = None
    rows: int = 0
    future: int = 0
    duplicates: int = 0
    first_future: str = ""
    first_duplicate: str = ""


def _show(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else f"{r[:40]}...' ({len(str(v))} chars)"


def _first(mask) -> int | None:
    m = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
    hits = np.flatnonzero(m)
    return int(hits[0]) if len(hits) else None


def _err(file: str, col: str, key: str, row: int | None, value, what: str) -> InputError:
    where = f" row {row}" if row is not None else ""
    val = f": value {_show(value)}" if row is not None else ""
    return InputError(f"{file}: column {col!r} (spec key {key}){where}{val}: {what}")


def _is_texty(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _strings(col, file, name, key, offset, max_len, allow_null: bool) -> pa.ChunkedArray:
    """An id/feature column as strings exactly as written; integers become their decimal text."""
    col = _plain(col)
    t = col.type
    if not (_is_texty(t) or pa.types.is_integer(t)):
        raise _err(file, name, key, None, None, f"must be string or integer, got {t}")
    col = col if pa.types.is_string(t) else col.cast(pa.string())
    if not allow_null and col.null_count:
        row = _first(pc.is_null(col))
        raise _err(file, name, key, offset + row, None, f"null id ({col.null_count} null(s) in this batch)")
    if len(col) and (pc.max(pc.utf8_length(col)).as_py() or 0) > max_len:
        long = pc.greater(pc.utf8_length(col), max_len)
        row = _first(long)
        if row is not None:
            raise _err(
                file,
                name,
                key,
                offset + row,
                col[row].as_py(),
                f"longer than checks.max_id_length={max_len} characters",
            )
    return col


def _parse_numbers(col, file, name, key, offset, target: pa.DataType, pattern: str) -> pa.ChunkedArray:
    col = _plain(col)
    if _is_texty(col.type):
        ok = pc.match_substring_regex(col, pattern)
        row = _first(pc.invert(ok))
        if row is not None:
            raise _err(file, name, key, offset + row, col[row].as_py(), f"not a number ({target})")
        col = pc.utf8_trim_whitespace(col)
    elif pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise _err(file, name, key, None, None, f"must be numeric, got {col.type}")
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        frac = pc.not_equal(col, pc.floor(col))
        row = _first(frac)
        if row is not None:
            raise _err(file, name, key, offset + row, col[row].as_py(), "not an integer")
    return col.cast(target)


def _bounds(spec: DatasetSpec) -> tuple[int, int]:
    """Plausible range in microseconds since the epoch."""
    lo = datetime.combine(spec.checks.min_time, datetime.min.time(), UTC)
    hi = datetime.combine(spec.checks.max_time, datetime.min.time(), UTC)
    return int(lo.timestamp() * 1e6), int(hi.timestamp() * 1e6)


def _to_us(v: np.ndarray, unit: str) -> np.ndarray:
    return v // 1000 if unit == "ns" else v * UNITS[unit]


def _detect_unit(v: np.ndarray, spec: DatasetSpec, file, name, offset) -> str:
    lo, hi = _bounds(spec)
    fits = [u for u in UNITS if lo <= _to_us(np.array([v.min()]), u)[0] and _to_us(np.array([v.max()]), u)[0] < hi]
    if len(fits) == 1:
        return fits[0]
    med = np.median(v)
    unit = next((u for u in UNITS if lo <= _to_us(np.array([int(med)]), u)[0] < hi), None)
    if unit is None:
        row = int(np.argmin(v))
        raise _err(
            file,
            name,
            "event_time",
            offset + row,
            int(v[row]),
            f"integer timestamps fit no unit (s/ms/us/ns) in the plausible range "
            f"{spec.checks.min_time}..{spec.checks.max_time}; set event_time_unit or checks.min_time/max_time",
        )
    return unit  # mixed units: the range check names the first row that does not fit


def _parse_iso(col: pa.ChunkedArray, spec: DatasetSpec, file, name, offset) -> pa.ChunkedArray:
    try:
        return col.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        pass
    try:
        naive = col.cast(pa.timestamp("us"))
        return pc.assume_timezone(naive, spec.timezone, ambiguous="earliest", nonexistent="earliest")
    except pa.ArrowInvalid:
        pass
    for i, s in enumerate(col.to_pylist()):  # error path only: find the first bad value
        if s is None:
            continue
        try:
            d = datetime.fromisoformat(s.strip())
        except ValueError:
            raise _err(
                file, name, "event_time", offset + i, s, "not an ISO-8601 timestamp nor an integer epoch"
            ) from None
        del d
    raise _err(
        file,
        name,
        "event_time",
        offset,
        col[0].as_py(),
        "timestamps mix values with and without a zone offset; write all with one or all without",
    )


def parse_event_time(col, spec: DatasetSpec, file: str, offset: int, found: Findings, now_us: int) -> pa.ChunkedArray:
    """-> timestamp[us, UTC]; unit detection, plausible range, future events (policy ``checks.future_events``)."""
    name = spec.event_time
    col = orig = _plain(col)
    if col.null_count:
        row = _first(pc.is_null(col))
        raise _err(file, name, "event_time", offset + row, None, "null timestamp")
    t = col.type
    if _is_texty(t):
        if pc.all(pc.match_substring_regex(col, _INT)).as_py():
            col, t = col.cast(pa.int64()), pa.int64()
        else:
            col, t = _parse_iso(col, spec, file, name, offset), None
    if t is not None and pa.types.is_integer(t):
        v = col.cast(pa.int64()).to_numpy()
        if found.unit is None:
            found.unit = (
                spec.event_time_unit if spec.event_time_unit != "auto" else _detect_unit(v, spec, file, name, offset)
            )
        col = pa.chunked_array([pa.array(_to_us(v, found.unit), pa.int64())]).cast(pa.timestamp("us", tz="UTC"))
    elif t is not None and pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(
                col.cast(pa.timestamp("us")), spec.timezone, ambiguous="earliest", nonexistent="earliest"
            )
        col = col.cast(pa.timestamp("us", tz="UTC"))
    elif t is not None and pa.types.is_date(t):
        col = pc.assume_timezone(col.cast(pa.timestamp("us")), spec.timezone)
    elif t is not None:
        raise _err(
            file,
            name,
            "event_time",
            None,
            None,
            f"must be a timestamp, ISO-8601 strings or integer epoch seconds/ms/us/ns, got {t}",
        )
    us = col.cast(pa.int64())
    lo, hi = _bounds(spec)
    row = _first(pc.or_(pc.less(us, lo), pc.greater_equal(us, hi)))
    if row is not None:
        unit = f" read as {found.unit}" if found.unit else ""
        raise _err(
            file,
            name,
            "event_time",
            offset + row,
            orig[row].as_py(),
            f"outside the plausible range {spec.checks.min_time}..{spec.checks.max_time}{unit} "
            f"(set event_time_unit, or checks.min_time/max_time)",
        )
    return col


def day_strings(et: pa.ChunkedArray, tz: str) -> pa.Array:
    """``YYYY-MM-DD`` of each timestamp in zone ``tz`` (strftime is ~50x slower on large batches)."""
    local = et if tz == "UTC" else pc.local_timestamp(et.cast(pa.timestamp("us", tz=tz)))
    day = np.floor_divide(local.cast(pa.int64()).to_numpy(), 86_400_000_000)
    uniq, inv = np.unique(day, return_inverse=True)
    names = pa.array([str(np.datetime64(int(d), "D")) for d in uniq], pa.string())
    return names.take(pa.array(inv.astype(np.int32)))


def _future_mask(et: pa.ChunkedArray, now_us: int):
    return pc.greater(et.cast(pa.int64()), now_us)


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
    cols["user_id"] = _strings(raw[spec.user_id], file, spec.user_id, "user_id", offset, mx, False)
    cols["item_id"] = _strings(raw[spec.item_id], file, spec.item_id, "item_id", offset, mx, False)
    et = parse_event_time(raw[spec.event_time], spec, file, offset, found, now_us)
    cols["event_time"] = et
    cols[DS] = day_strings(et, spec.timezone)
    scen = _parse_numbers(raw[spec.scenario], file, spec.scenario, "scenario", offset, pa.int64(), _INT)
    unknown = pc.fill_null(pc.invert(pc.is_in(scen, value_set=pa.array(sorted(spec.scenarios), pa.int64()))), True)
    row = _first(unknown)
    if row is not None:
        raise _err(
            file,
            spec.scenario,
            "scenario",
            offset + row,
            scen[row].as_py(),
            f"unknown scenario id (known: {sorted(spec.scenarios)})",
        )
    cols["scenario"] = scen.cast(pa.int32())
    if spec.sample_type:
        st = _plain(raw[spec.sample_type]).cast(pa.string())
        bad = pc.fill_null(pc.invert(pc.is_in(st, value_set=pa.array(SAMPLE_TYPES))), True)
        row = _first(bad)
        if row is not None:
            raise _err(
                file, spec.sample_type, "sample_type", offset + row, st[row].as_py(), f"allowed {list(SAMPLE_TYPES)}"
            )
        cols["sample_type"] = st
    else:
        cols["sample_type"] = pa.chunked_array([pa.repeat(pa.scalar("ad"), n)])
    for task in spec.tasks:
        vals = _parse_numbers(raw[task], file, task, "tasks", offset, pa.float64(), _NUM)
        # null = the task does not apply to this row (e.g. no conversion label without a click)
        bad = pc.and_(pc.is_valid(vals), pc.invert(pc.is_in(vals, value_set=pa.array([0.0, 1.0]))))
        row = _first(bad)
        if row is not None:
            raise _err(file, task, "tasks", offset + row, vals[row].as_py(), "labels must be 0, 1 or null")
        cols[task] = vals.cast(pa.float32())
    for key, feats in (("user_features", spec.user_features), ("item_features", spec.item_features)):
        for f in feats:
            cols[f] = _strings(raw[f], file, f, key, offset, mx, True)
    if spec.sequence.column:
        seq = _plain(raw[spec.sequence.column])
        if not (pa.types.is_list(seq.type) or pa.types.is_large_list(seq.type)):
            raise _err(file, spec.sequence.column, "sequence.column", None, None, f"must be a list, got {seq.type}")
        cols[CANONICAL_SEQUENCE] = seq.cast(pa.list_(pa.string()))
    cols[FILE_COL] = pa.chunked_array([pa.array(np.full(n, file_index, np.int32))])
    cols[ROW_COL] = pa.chunked_array([pa.array(np.arange(offset, offset + n, dtype=np.int64))])
    out = pa.table(cols)
    fut = _future_mask(et, now_us)
    k = int(pc.sum(fut).as_py() or 0)
    if k:
        row = _first(fut)
        if spec.checks.future_events == "fail":
            raise _err(
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
        if _is_texty(t):
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
            f"user {_show(day['user_id'][first].as_py())}, item {_show(day['item_id'][first].as_py())}, "
            f"{day['event_time'][first]}); set checks.duplicates: drop to drop them"
        )
    if not found.first_duplicate:
        found.first_duplicate = where
    found.duplicates += k
    return day.take(pa.array(keep))
