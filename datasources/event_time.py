"""Event times: raw timestamp column -> ``timestamp[us, UTC]``, and the day of each row.

Accepted: a timestamp column (with zone: absolute; without: local time in
``spec.timezone``), ISO-8601 strings (with or without offset), or integers whose unit
(s/ms/us/ns) is the one that puts them in ``checks.min_time..max_time`` (the units are
1000x apart and the range spans less than that, so at most one fits) or
``spec.event_time_unit``. ``ds`` is the day in ``spec.timezone``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import DatasetSpec
from datasources.column_parse import INT_RE, first_row, input_error, is_texty, plain_column

if TYPE_CHECKING:
    from datasources.checks import Findings

UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0}  # -> microseconds (ns: divide by 1000)


def time_bounds(spec: DatasetSpec) -> tuple[int, int]:
    """Plausible range in microseconds since the epoch."""
    lo = datetime.combine(spec.checks.min_time, datetime.min.time(), UTC)
    hi = datetime.combine(spec.checks.max_time, datetime.min.time(), UTC)
    return int(lo.timestamp() * 1e6), int(hi.timestamp() * 1e6)


def to_micros(v: np.ndarray, unit: str) -> np.ndarray:
    return v // 1000 if unit == "ns" else v * UNITS[unit]


def detect_unit(v: np.ndarray, spec: DatasetSpec, file, name, offset) -> str:
    lo, hi = time_bounds(spec)
    fits = [
        u for u in UNITS if lo <= to_micros(np.array([v.min()]), u)[0] and to_micros(np.array([v.max()]), u)[0] < hi
    ]
    if len(fits) == 1:
        return fits[0]
    med = np.median(v)
    unit = next((u for u in UNITS if lo <= to_micros(np.array([int(med)]), u)[0] < hi), None)
    if unit is None:
        row = int(np.argmin(v))
        raise input_error(
            file,
            name,
            "event_time",
            offset + row,
            int(v[row]),
            f"integer timestamps fit no unit (s/ms/us/ns) in the plausible range "
            f"{spec.checks.min_time}..{spec.checks.max_time}; set event_time_unit or checks.min_time/max_time",
        )
    return unit  # mixed units: the range check names the first row that does not fit


def parse_iso(col: pa.ChunkedArray, spec: DatasetSpec, file, name, offset) -> pa.ChunkedArray:
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
            raise input_error(
                file, name, "event_time", offset + i, s, "not an ISO-8601 timestamp nor an integer epoch"
            ) from None
        del d
    raise input_error(
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
    col = orig = plain_column(col)
    if col.null_count:
        row = first_row(pc.is_null(col))
        raise input_error(file, name, "event_time", offset + row, None, "null timestamp")
    t = col.type
    if is_texty(t):
        if pc.all(pc.match_substring_regex(col, INT_RE)).as_py():
            col, t = col.cast(pa.int64()), pa.int64()
        else:
            col, t = parse_iso(col, spec, file, name, offset), None
    if t is not None and pa.types.is_integer(t):
        v = col.cast(pa.int64()).to_numpy()
        if found.unit is None:
            found.unit = (
                spec.event_time_unit if spec.event_time_unit != "auto" else detect_unit(v, spec, file, name, offset)
            )
        col = pa.chunked_array([pa.array(to_micros(v, found.unit), pa.int64())]).cast(pa.timestamp("us", tz="UTC"))
    elif t is not None and pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(
                col.cast(pa.timestamp("us")), spec.timezone, ambiguous="earliest", nonexistent="earliest"
            )
        col = col.cast(pa.timestamp("us", tz="UTC"))
    elif t is not None and pa.types.is_date(t):
        col = pc.assume_timezone(col.cast(pa.timestamp("us")), spec.timezone)
    elif t is not None:
        raise input_error(
            file,
            name,
            "event_time",
            None,
            None,
            f"must be a timestamp, ISO-8601 strings or integer epoch seconds/ms/us/ns, got {t}",
        )
    us = col.cast(pa.int64())
    lo, hi = time_bounds(spec)
    row = first_row(pc.or_(pc.less(us, lo), pc.greater_equal(us, hi)))
    if row is not None:
        unit = f" read as {found.unit}" if found.unit else ""
        raise input_error(
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


def future_mask(et: pa.ChunkedArray, now_us: int):
    return pc.greater(et.cast(pa.int64()), now_us)
