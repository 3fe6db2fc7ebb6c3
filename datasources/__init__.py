"""datasources/: interaction logs in, the canonical Delta log out.

- :func:`generate_log`: a generated multi-scenario ads log with planted latent signal.
- :func:`load_movielens`: MovieLens-100K from the original files (the shared protocol).
- :func:`read_raw_log` + :func:`ingest`: any Parquet/CSV log with a DatasetSpec.
- :func:`materialize`: any of the three (a ``SourceConfig``) -> the canonical log,
  incrementally for a ``file`` source (docs/ingest.md); :func:`last_ingest` says what it did.
- :func:`validate_source`: every input sanity check, nothing written (``lfm4ads validate``).
- :func:`read_log`, :func:`log_days`, :func:`read_log_spec`, :func:`log_files`: read it back.
"""

from datasources.config import FileSource, GeneratedSource, MovieLensSource, SourceConfig
from datasources.generator import GeneratorConfig, generate_days, generate_log, generated_spec
from datasources.generic import load_spec, read_raw_log
from datasources.ingest import LogValidationError, canonicalize, ingest
from datasources.log_store import log_days, log_files, read_log, read_log_spec
from datasources.materialize import last_ingest, materialize, validate_source
from datasources.movielens import load_movielens

__all__ = [
    "FileSource",
    "GeneratedSource",
    "GeneratorConfig",
    "LogValidationError",
    "MovieLensSource",
    "SourceConfig",
    "canonicalize",
    "generate_days",
    "generate_log",
    "generated_spec",
    "ingest",
    "last_ingest",
    "load_movielens",
    "load_spec",
    "log_days",
    "log_files",
    "materialize",
    "read_log",
    "read_log_spec",
    "read_raw_log",
    "validate_source",
]
