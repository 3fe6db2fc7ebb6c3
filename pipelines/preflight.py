"""Checks on a run's input files before any engine reads them.

A truncated or replaced Parquet file of the log otherwise surfaces deep inside a Ray Data
task as ``Parquet magic bytes not found in footer`` with no file name. Here every data
file of the days about to be read is compared with what the Delta log recorded for it
(size in bytes) and its footer is read (row count against the log's statistics when it
has them): metadata only, milliseconds per file.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import InputError
from engines import delta_io


class InputFileError(InputError):
    """An input file is missing, truncated, replaced or unreadable; the message names it (exit 5)."""


def check_log_files(log_path: str | Path, days: list[str]) -> int:
    """Raise :class:`InputFileError` naming the first bad file of ``days``; returns the
    number of files checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    log_path = Path(log_path)
    dt = delta_io.open_table(log_path)
    wanted_cols = ["path", "size_bytes", "num_records", "partition.ds"]
    actions = pa.table(dt.get_add_actions(flatten=True)).select(wanted_cols).to_pylist()
    want = set(days)
    checked = 0
    for a in actions:
        ds = a["partition.ds"]
        if ds not in want:
            continue
        path = log_path / a["path"]
        where = f"{path} (log ds={ds}, table version {dt.version()})"
        if not path.is_file():
            raise InputFileError(f"{where}: file is missing; nothing of this run was published")
        size = path.stat().st_size
        if a.get("size_bytes") is not None and size != a["size_bytes"]:
            raise InputFileError(
                f"{where}: {size} bytes on disk, the Delta log recorded {a['size_bytes']}: the file was truncated "
                "or replaced outside the table; restore it (or re-ingest the day); nothing of this run was published"
            )
        try:
            rows = pq.read_metadata(path).num_rows
        except Exception as e:  # ArrowInvalid, OSError: not a readable Parquet file
            raise InputFileError(f"{where}: unreadable Parquet footer ({e}); nothing of this run was published") from e
        stats = a["num_records"]
        if stats is not None and rows != stats:
            raise InputFileError(f"{where}: footer says {rows} rows, the Delta log recorded {stats}")
        checked += 1
    return checked
