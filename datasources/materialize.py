"""Turn a source config into the canonical Delta log (idempotent: an existing log is reused)."""

from __future__ import annotations

from pathlib import Path

from contracts import DatasetSpec, load_config
from datasources.config import FileSource, GeneratedSource, MovieLensSource
from datasources.generator import generate_log
from datasources.generic import read_raw_log
from datasources.ingest import ingest
from datasources.log_store import read_log_spec
from datasources.movielens import load_movielens
from engines import delta_io


def materialize(source: GeneratedSource | MovieLensSource | FileSource, log_path: str | Path, force: bool = False) -> DatasetSpec:
    """Write the source's canonical log at ``log_path`` unless it is already there."""
    if delta_io.exists(log_path) and not force:
        return read_log_spec(log_path)
    if isinstance(source, GeneratedSource):
        return generate_log(source.generator, log_path)
    if isinstance(source, MovieLensSource):
        raw, spec = load_movielens(source.path)
        ingest(raw, spec, log_path, source=str(source.path))
        return spec.canonical()
    if source.spec is None and source.spec_path is None:
        raise ValueError("source: a file source needs `spec` or `spec_path`")
    spec = source.spec or load_config(source.spec_path, DatasetSpec)
    ingest(read_raw_log(source.path), spec, log_path, source=str(source.path))
    return spec.canonical()
