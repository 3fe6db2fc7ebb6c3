"""Turn a source config into the canonical Delta log, and check a source without writing.

- a ``file`` source is ingested incrementally (:mod:`datasources.incremental`): new or
  changed days only, all of them in one commit; ``force`` rebuilds the log;
- generated and MovieLens sources are fixed: an existing log is reused unless ``force``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from contracts import ConfigError, DatasetSpec, load_config
from contracts.dataset import IngestReport
from datasources.config import FileSource, GeneratedSource, MovieLensSource
from datasources.generator import generate_days, generate_log, generated_spec
from datasources.incremental import Input, run_ingest
from datasources.ingest_manifest import read_manifest
from datasources.log_store import read_log_spec
from datasources.movielens import load_movielens
from datasources.sources import list_source_files, read_batches
from engines import delta_io

SourceLike = GeneratedSource | MovieLensSource | FileSource


def source_spec(source: FileSource) -> DatasetSpec:
    """The raw DatasetSpec of a file source (inline or from ``spec_path``); ConfigError if neither."""
    if source.spec is None and source.spec_path is None:
        raise ConfigError("source: a file source needs `spec` or `spec_path`")
    return source.spec or load_config(source.spec_path, DatasetSpec)


def file_inputs(source: FileSource, spec: DatasetSpec) -> list[Input]:
    return [Input(f.path, f.fingerprint, lambda f=f: read_batches(f, spec)) for f in list_source_files(source.path)]


def table_input(table: pa.Table, name: str, batch_rows: int = 1_000_000) -> Input:
    def batches() -> Iterator[pa.Table]:
        for start in range(0, max(table.num_rows, 1), batch_rows):
            yield table.slice(start, batch_rows)

    return Input(name, None, batches)


def materialize(source: SourceLike, log_path: str | Path, force: bool = False) -> DatasetSpec:
    """Bring the canonical log at ``log_path`` up to date with ``source``; returns the canonical spec.

    What this call ingested is in :func:`last_ingest` (``ingested_days``, ``reused_days``).
    Raises :class:`contracts.InputError` (bad input: nothing written) or ConfigError.
    """
    if isinstance(source, FileSource):
        spec = source_spec(source)
        run_ingest(file_inputs(source, spec), spec, log_path, source=str(source.path), force=force)
        return spec.canonical()
    if delta_io.exists(log_path) and delta_io.list_days(log_path) and not force:
        return read_log_spec(log_path)
    if isinstance(source, GeneratedSource):
        return generate_log(source.generator, log_path)
    raw, spec = load_movielens(source.path)
    run_ingest([table_input(raw, str(source.path))], spec, log_path, source=str(source.path), force=force)
    return spec.canonical()


def last_ingest(log_path: str | Path) -> IngestReport | None:
    """The report of the last ingest that committed into ``log_path`` (None: none recorded)."""
    man = read_manifest(log_path)
    return man.last if man is not None else None


def validate_source(source: SourceLike) -> IngestReport:
    """Run every input sanity check on ``source`` and write nothing (``lfm4ads validate``).

    Returns the rows, days and warnings (with counts); raises :class:`contracts.InputError`
    (exit 5) naming file, column, row and value on a bad log, ConfigError (exit 2) on a bad spec.
    """
    if isinstance(source, GeneratedSource):
        spec = generated_spec(source.generator)
        rows, days = 0, []
        for ds, table in generate_days(source.generator):
            rows += table.num_rows
            days.append(ds)
        return IngestReport(source="generated", rows=rows, days=days)
    if isinstance(source, MovieLensSource):
        raw, spec = load_movielens(source.path)
        return run_ingest([table_input(raw, str(source.path))], spec, None, source=str(source.path))
    spec = source_spec(source)
    return run_ingest(file_inputs(source, spec), spec, None, source=str(source.path))
