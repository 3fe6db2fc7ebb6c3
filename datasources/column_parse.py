"""Raw columns -> typed columns, and the one-line :class:`~contracts.InputError` every
input check raises (file, column, spec key, 0-based data row, value).

Ids and features become strings exactly as written (integers as their decimal text);
labels and scenario ids are parsed as numbers, from numeric or text columns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import InputError

INT_RE = r"^\s*[+-]?\d+\s*$"
NUM_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def show_value(v) -> str:
    """A value for an error line (long values cut, their length given)."""
    r = repr(v)
    return r if len(r) <= 60 else f"{r[:40]}...' ({len(str(v))} chars)"


def first_row(mask) -> int | None:
    """Index of the first true entry of a boolean column (nulls count as false), or None."""
    m = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
    hits = np.flatnonzero(m)
    return int(hits[0]) if len(hits) else None


def input_error(file: str, col: str, key: str, row: int | None, value, what: str) -> InputError:
    """The one-line refusal: file, column, spec key, row and value (row None: the whole column)."""
    where = f" row {row}" if row is not None else ""
    val = f": value {show_value(value)}" if row is not None else ""
    return InputError(f"{file}: column {col!r} (spec key {key}){where}{val}: {what}")


def is_texty(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def plain_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column decoded to its value type; any other column as is."""
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def id_strings(col, file, name, key, offset, max_len, allow_null: bool) -> pa.ChunkedArray:
    """An id/feature column as strings exactly as written; integers become their decimal text."""
    col = plain_column(col)
    t = col.type
    if not (is_texty(t) or pa.types.is_integer(t)):
        raise input_error(file, name, key, None, None, f"must be string or integer, got {t}")
    col = col if pa.types.is_string(t) else col.cast(pa.string())
    if not allow_null and col.null_count:
        row = first_row(pc.is_null(col))
        raise input_error(file, name, key, offset + row, None, f"null id ({col.null_count} null(s) in this batch)")
    if len(col) and (pc.max(pc.utf8_length(col)).as_py() or 0) > max_len:
        long = pc.greater(pc.utf8_length(col), max_len)
        row = first_row(long)
        if row is not None:
            raise input_error(
                file,
                name,
                key,
                offset + row,
                col[row].as_py(),
                f"longer than checks.max_id_length={max_len} characters",
            )
    return col


def parse_numbers(col, file, name, key, offset, target: pa.DataType, pattern: str) -> pa.ChunkedArray:
    col = plain_column(col)
    if is_texty(col.type):
        ok = pc.match_substring_regex(col, pattern)
        row = first_row(pc.invert(ok))
        if row is not None:
            raise input_error(file, name, key, offset + row, col[row].as_py(), f"not a number ({target})")
        col = pc.utf8_trim_whitespace(col)
    elif pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise input_error(file, name, key, None, None, f"must be numeric, got {col.type}")
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        frac = pc.not_equal(col, pc.floor(col))
        row = first_row(frac)
        if row is not None:
            raise input_error(file, name, key, offset + row, col[row].as_py(), "not an integer")
    return col.cast(target)
