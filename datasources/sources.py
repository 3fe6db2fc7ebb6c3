"""The files of a ``file`` source and reading them in bounded memory, typed from the spec.

A source path is one file (that may grow), a folder of files, or a day-partitioned folder
(``ds=YYYY-MM-DD/`` sub-folders, at any depth), on local disk or in an object store
(``s3://bucket/prefix``, read with ``pyarrow.fs``; ``gs://`` and ``az://`` / ``abfs[s]://``
are accepted as pyarrow supports them, untested here). Each file gets a cheap fingerprint
(size, modification time: ``stat`` locally, the object's ``FileInfo`` in a store) so a
later run reads only what changed; the per-day content fingerprint
(:func:`datasources.checks.day_fingerprint`) then decides what is re-ingested.

Object-store credentials come only from the provider chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` in the environment, a profile, an instance role), never from a
config file; the endpoint and region from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, or from the non-secret options of a URI
registered with :func:`engines.storage.register` (the conventions of the published tables).

CSV columns are typed from the spec, never inferred: every spec column is read as a
string exactly as written ('007' stays '007', zip '02139' keeps its 0) and converted by
:mod:`datasources.checks` with a message naming the row and value when it cannot be.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contracts import ConfigError, DatasetSpec, InputError
from datasources.checks import check_columns
from engines import storage

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".tsv", ".txt")
_DS_DIR = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")
BATCH_ROWS = 256_000  # rows per batch read: bounds memory whatever the file size
CSV_BLOCK = 16 << 20
# endpoint / region of an object store from the environment (what AWS SDKs read); never credentials
_ENV_OPTIONS = {
    "AWS_ENDPOINT_URL": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "AWS_REGION": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its path (or object URI), fingerprint and ``ds=`` folder (if any)."""

    path: str
    size: int
    mtime_ns: int
    partition: str | None = None

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


def parse_source_uri(text: str) -> str | Path:
    """A ``source.path`` written as a URI: ``file:///abs`` -> the local ``Path``; an object
    store URI -> ``scheme://bucket/prefix`` (no trailing slash). ValueError naming the
    problem (a config error, exit 2) for another scheme or a URI without a bucket."""
    text = text.strip()
    url = urlparse(text)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise ValueError(f"{text}: a file:// URI must name a local path (file:///abs/path)")
        return Path(unquote(url.path))
    return storage.parse_uri(text, "source.path", what="a source (or use a local path)")


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for an object-store URI (``s3://...``), False for a local path."""
    return storage.is_uri(path)


def store_options(uri: str) -> dict[str, str]:
    """Non-secret options (endpoint, region) for ``uri``: the environment's, overridden by
    those of a URI registered (or mounted) with :mod:`engines.storage` that prefixes it."""
    opts = {}
    for key, names in _ENV_OPTIONS.items():
        value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value:
            opts[key] = value
    return {**opts, **storage.locate(uri)[1]}


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for an object URI (``engines.storage`` conventions)."""
    return storage.filesystem(uri, store_options(uri))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _suffix(path: str) -> str:
    return Path(urlparse(path).path if is_uri(path) else path).suffix.lower()


def _partition(parts: list[str] | tuple[str, ...]) -> str | None:
    return next((m.group(1) for m in map(_DS_DIR.match, reversed(parts)) if m), None)


def list_source_files(path: str | Path) -> list[SourceFile]:
    """Every data file of the source, sorted by path (dot/underscore files are skipped)."""
    if is_uri(path):
        return _list_store(str(path).rstrip("/"))
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
        out.append(SourceFile(str(f), st.st_size, st.st_mtime_ns, _partition(f.parts[:-1])))
    return out


def _list_store(uri: str) -> list[SourceFile]:
    """The objects of a source URI: one object, or every data object under the prefix.

    A missing bucket or an unreachable store is a :class:`ConfigError` (exit 2, as for the
    published tables' bucket); a bucket without that object or prefix an :class:`InputError`
    (exit 5, as a missing local log)."""
    from pyarrow import fs

    f, root = _filesystem(uri)
    bucket = root.split("/")[0]
    try:
        info = f.get_file_info(root)
        if info.type == fs.FileType.NotFound:
            if "/" not in root or f.get_file_info(bucket).type == fs.FileType.NotFound:
                raise ConfigError(
                    f"source.path: {uri}: bucket {bucket!r} does not exist (or is not visible with these credentials)"
                )
            raise InputError(f"{uri}: log not found (no object or prefix {root[len(bucket) + 1 :]!r} in {bucket!r})")
        if info.type == fs.FileType.File:
            infos, rels = [info], [""]
        else:
            listed = f.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
            infos, rels = [], []
            for i in sorted(listed, key=lambda i: i.path):
                rel = i.path[len(root) + 1 :] if root else i.path
                if (
                    i.type == fs.FileType.File
                    and _suffix(rel) in PARQUET + CSV
                    and not any(part.startswith((".", "_")) for part in rel.split("/"))
                ):
                    infos.append(i)
                    rels.append(rel)
            if not infos:
                raise InputError(f"{uri}: prefix holds no Parquet or CSV object")
    except OSError as e:
        raise ConfigError(f"source.path: {uri}: cannot reach the store: {_first_line(e)}") from None
    out = []
    for i, rel in zip(infos, rels):
        name = f"{uri}/{rel}" if rel else uri
        if _suffix(name) not in PARQUET + CSV:
            raise InputError(f"{name}: unsupported log format {_suffix(name)!r} (Parquet or CSV)")
        if i.mtime_ns is None or i.size is None:
            raise InputError(f"{name}: the store reports no size or modification time for this object")
        out.append(SourceFile(name, i.size, i.mtime_ns, _partition(i.path.split("/")[:-1])))
    return out


def spec_columns(spec: DatasetSpec) -> list[str]:
    return list(spec.raw_required_columns())


def read_batches(f: SourceFile | str, spec: DatasetSpec, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The spec's columns of one file (or object), in file order, ``batch_rows`` at a time.

    Raises :class:`InputError` for an empty or header-only file, a file missing a spec
    column, or one that cannot be parsed (the reader's message, with the file named).
    """
    path = f.path if isinstance(f, SourceFile) else str(f)
    suffix = _suffix(path)
    with ExitStack() as stack:
        if is_uri(path):
            opener = _RemoteOpener(path, stack)
            size = f.size if isinstance(f, SourceFile) else opener.size()
        else:
            opener = None
            size = Path(path).stat().st_size
        if size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        if suffix in PARQUET:
            yield from _parquet_batches(path, spec, batch_rows, opener)
        elif suffix in CSV:
            yield from _csv_batches(path, spec, batch_rows, opener)
        else:
            raise InputError(f"{path}: unsupported log format {suffix!r} (Parquet or CSV)")


class _RemoteOpener:
    """Opens one object of a store for reading; closes what it opened with ``stack``."""

    def __init__(self, uri: str, stack: ExitStack):
        self.uri = uri
        self.stack = stack
        self.fs, self.key = _filesystem(uri)

    def size(self) -> int:
        from pyarrow import fs

        info = self._call(self.fs.get_file_info, self.key)
        if info.type != fs.FileType.File:
            raise InputError(f"{self.uri}: object not found")
        return int(info.size)

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except FileNotFoundError:
            raise InputError(f"{self.uri}: object not found (removed while reading?)") from None
        except OSError as e:
            raise InputError(f"{self.uri}: cannot read the object ({_first_line(e)})") from None

    def random_access(self):
        """A seekable file: Parquet reads the footer, then one row group's column chunks at a time."""
        return self.stack.enter_context(self._call(self.fs.open_input_file, self.key))

    def stream(self):
        """A sequential stream (CSV is read block by block)."""
        return self.stack.enter_context(self._call(self.fs.open_input_stream, self.key, compression=None))

    def first_line(self, limit: int = CSV_BLOCK) -> bytes:
        """The bytes up to the first line break (at most ``limit``), from a stream of its own."""
        with self._call(self.fs.open_input_stream, self.key, compression=None) as src:
            buf = b""
            while b"\n" not in buf and len(buf) < limit:
                chunk = self._call(src.read, 64 << 10)
                if not chunk:
                    break
                buf += chunk
        return buf.split(b"\n", 1)[0]


def _parquet_batches(
    path: str, spec: DatasetSpec, batch_rows: int, opener: _RemoteOpener | None = None
) -> Iterator[pa.Table]:
    try:
        # remote: pre_buffer coalesces one row group's column chunks into few range requests
        pf = pq.ParquetFile(opener.random_access(), pre_buffer=True) if opener else pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    check_columns(pf.schema_arrow.names, spec, path, False)
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: no data rows")
    cols = spec_columns(spec)
    try:  # one row group at a time: iter_batches over the whole file reads ahead (memory grows with it)
        for rg in range(pf.num_row_groups):
            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=cols):
                yield pa.Table.from_batches([b])
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: corrupt Parquet data ({_first_line(e)})") from None


def _csv_batches(
    path: str, spec: DatasetSpec, batch_rows: int, opener: _RemoteOpener | None = None
) -> Iterator[pa.Table]:
    opts = spec.csv
    delim = opts.delimiter or ("\t" if path.endswith(".tsv") else ",")
    names = opts.columns
    header = opts.header and names is None
    read = pacsv.ReadOptions(column_names=names, autogenerate_column_names=False, block_size=CSV_BLOCK)
    cols = spec_columns(spec)
    if header:  # the header decides the column names; check them before typing columns
        if opener:
            line = opener.first_line()
        else:
            with open(path, "rb") as fh:
                line = fh.readline()
        first = line.decode("utf-8", "replace").rstrip("\r\n")
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
            opener.stream() if opener else path,
            read_options=read,
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=conv,
        )
    except pa.ArrowInvalid as e:
        msg = _first_line(e)
        if "Empty CSV file" in msg:
            raise InputError(f"{path}: empty file (no header, no rows)") from None
        raise InputError(f"{path}: cannot read CSV ({msg})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read CSV ({_first_line(e)})") from None
    n = 0
    try:
        for b in reader:
            if b.num_rows == 0:
                continue
            n += b.num_rows
            t = pa.Table.from_batches([b])
            for start in range(0, t.num_rows, batch_rows):
                yield t.slice(start, batch_rows)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: cannot read CSV after data row {n} ({_first_line(e)})") from None
    if n == 0:
        raise InputError(f"{path}: no data rows (header only)")
