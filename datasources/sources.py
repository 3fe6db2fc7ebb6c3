"""The files of a ``file`` source and reading them in bounded memory, typed from the spec.

A source path is one file (that may grow), a folder of files, or a day-partitioned folder
(``ds=YYYY-MM-DD/`` sub-folders, at any depth). Each file gets a cheap fingerprint (size,
modification time) so a later run reads only what changed; the per-day content
fingerprint (:func:`datasources.checks.day_fingerprint`) then decides what is re-ingested.

CSV columns are typed from the spec, never inferred: every spec column is read as a
string exactly as written ('007' stays '007', zip '02139' keeps its 0) and converted by
:mod:`datasources.checks` with a message naming the row and value when it cannot be.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contracts import DatasetSpec, InputError
from datasources.checks import check_columns

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".tsv", ".txt")
_DS_DIR = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")
BATCH_ROWS = 256_000  # rows per batch read: bounds memory whatever the file size
CSV_BLOCK = 16 << 20


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its path, fingerprint and the ``ds=`` folder it sits in (if any)."""

    path: str
    size: int
    mtime_ns: int
    partition: str | None = None

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


def list_source_files(path: str | Path) -> list[SourceFile]:
    """Every data file of the source, sorted by path (dot/underscore files are skipped)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: log not found")
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in PARQUET + CSV
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise InputError(f"{path}: folder holds no Parquet or CSV file")
    out = []
    for f in files:
        if f.suffix.lower() not in PARQUET + CSV:
            raise InputError(f"{f}: unsupported log format {f.suffix!r} (Parquet or CSV)")
        st = f.stat()
        part = next((m.group(1) for m in map(_DS_DIR.match, reversed(f.parts[:-1])) if m), None)
        out.append(SourceFile(str(f), st.st_size, st.st_mtime_ns, part))
    return out


def spec_columns(spec: DatasetSpec) -> list[str]:
    return list(spec.raw_required_columns())


def read_batches(f: SourceFile | str, spec: DatasetSpec, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The spec's columns of one file, in file order, ``batch_rows`` at a time.

    Raises :class:`InputError` for an empty or header-only file, a file missing a spec
    column, or one that cannot be parsed (the reader's message, with the file named).
    """
    path = f.path if isinstance(f, SourceFile) else str(f)
    suffix = Path(path).suffix.lower()
    if Path(path).stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    if suffix in PARQUET:
        yield from _parquet_batches(path, spec, batch_rows)
    elif suffix in CSV:
        yield from _csv_batches(path, spec, batch_rows)
    else:
        raise InputError(f"{path}: unsupported log format {suffix!r} (Parquet or CSV)")


def _parquet_batches(path: str, spec: DatasetSpec, batch_rows: int) -> Iterator[pa.Table]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    check_columns(pf.schema_arrow.names, spec, path, False)
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: no data rows")
    cols = spec_columns(spec)
    try:  # one row group at a time: iter_batches over the whole file reads ahead (memory grows with it)
        for rg in range(pf.num_row_groups):
            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=cols):
                yield pa.Table.from_batches([b])
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: corrupt Parquet data ({str(e).splitlines()[0]})") from None


def _csv_batches(path: str, spec: DatasetSpec, batch_rows: int) -> Iterator[pa.Table]:
    opts = spec.csv
    delim = opts.delimiter or ("\t" if path.endswith(".tsv") else ",")
    names = opts.columns
    header = opts.header and names is None
    read = pacsv.ReadOptions(column_names=names, autogenerate_column_names=False, block_size=CSV_BLOCK)
    cols = spec_columns(spec)
    if header:  # the header decides the column names; check them before typing columns
        with open(path, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace").rstrip("\r\n")
        have = [c.strip().strip('"') for c in first.split(delim)]
        check_columns(have, spec, path, True)
    conv = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in cols},
        include_columns=cols,
        strings_can_be_null=True,
        null_values=list(opts.null_values),
        quoted_strings_can_be_null=False,
    )
    try:
        reader = pacsv.open_csv(
            path, read_options=read, parse_options=pacsv.ParseOptions(delimiter=delim), convert_options=conv
        )
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0]
        if "Empty CSV file" in msg:
            raise InputError(f"{path}: empty file (no header, no rows)") from None
        raise InputError(f"{path}: cannot read CSV ({msg})") from None
    n = 0
    try:
        for b in reader:
            if b.num_rows == 0:
                continue
            n += b.num_rows
            t = pa.Table.from_batches([b])
            for start in range(0, t.num_rows, batch_rows):
                yield t.slice(start, batch_rows)
    except pa.ArrowInvalid as e:
        raise InputError(f"{path}: cannot read CSV after data row {n} ({str(e).splitlines()[0]})") from None
    if n == 0:
        raise InputError(f"{path}: no data rows (header only)")
