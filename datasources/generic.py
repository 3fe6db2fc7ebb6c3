"""Any Parquet/CSV log plus a YAML :class:`DatasetSpec`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contracts import DatasetSpec, load_config


def read_raw_log(path: str | Path, spec: DatasetSpec | None = None) -> pa.Table:
    """Read a Parquet file/folder or a CSV file into Arrow, in memory.

    With ``spec``: the spec's columns only, CSV typed from the spec (ids as written) and
    every file of a folder (as ingest reads them). Without: types inferred (exploration only).
    """
    if spec is not None:
        from datasources.sources import list_source_files, read_batches

        return pa.concat_tables([b for f in list_source_files(path) for b in read_batches(f, spec)])
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log not found: {path}")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    if path.suffix in (".csv", ".tsv", ".txt"):
        delim = "\t" if path.suffix == ".tsv" else ","
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim))
    raise ValueError(f"{path}: unsupported log format {path.suffix!r} (Parquet or CSV)")


def load_spec(path: str | Path) -> DatasetSpec:
    return load_config(path, DatasetSpec)
