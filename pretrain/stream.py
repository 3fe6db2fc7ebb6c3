"""The training rows as a Ray Data stream: the log's Parquet files (or a table) -> Arrow
blocks -> windows encoded and shuffled inside each Ray Train worker.

Order is the contract that makes resume exact: Ray Data runs with ``preserve_order``, the
files are read in :func:`log_files_for_days` order, and every worker iterates the WHOLE
stream (``DataConfig(datasets_to_split=[])``) cut into windows of ``train.shuffle_window``
rows; inside window w of epoch e every worker applies the same (seed, e, w)-seeded
permutation and keeps its round-robin share (``pretrain.loop.window_order``). So the rows a
worker trains on depend only on (files, seed, epoch, rank, world), never on scheduling, and
the plain loop over :func:`read_in_stream_order` with :func:`pretrain.loop.array_windows`
sees exactly the same batches. The price: with N workers each one reads and encodes the
whole log (encoding 200k rows takes about 0.2 s; training on them about 40 s).

The read task asks for ``train.data_cpus`` (default 0) CPUs: on a small machine Ray Train
workers hold every CPU, and a read task that waits for a free CPU would hang the run
(see stack-notes: Ray Data hangs silently when nothing is left for the read tasks).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pretrain.data import Arrays, to_arrays
from pretrain.features import FeatureEncoder
from pretrain.log_reader import BLOCK_ROWS, read_files


def log_files_for_days(log_path: str | Path, days: list[str]) -> list[str]:
    """Local Parquet paths of ``days`` of the canonical log: days sorted, files sorted
    within a day (the stream order)."""
    from datasources.log_store import log_files

    out: list[str] = []
    for d in sorted(days):
        out += sorted(_local(u) for u in log_files(log_path, d))
    return out


def read_in_stream_order(files: list[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of ``files`` in the order the Ray Data stream yields them (a plain-loop
    reference for tests and benchmarks)."""
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")


def stream_columns(encoder: FeatureEncoder) -> list[str]:
    """The canonical columns the encoder reads (nothing else is read from the log)."""
    from contracts.dataset import CANONICAL_SAMPLE_TYPE, CANONICAL_SCENARIO, CANONICAL_SEQUENCE

    spec = encoder.spec
    return [*spec.categorical_columns, CANONICAL_SCENARIO, CANONICAL_SAMPLE_TYPE, CANONICAL_SEQUENCE, *spec.tasks]


def train_dataset(source: list[str] | pa.Table, encoder: FeatureEncoder, data_cpus: float = 0.0) -> Any:
    """A lazy ``ray.data.Dataset`` of the raw canonical rows the encoder needs, in source
    order (workers encode each window: :func:`stream_windows`).

    ``source``: Parquet files (read by ONE Ray Data task per epoch and worker, streaming
    them in order: ``pretrain.log_reader``) or an in-memory table (blocks of
    ``BLOCK_ROWS`` in the object store)."""
    import ray.data

    cols = stream_columns(encoder)
    if isinstance(source, pa.Table):
        missing = [c for c in cols if c not in source.column_names]
        if missing:
            raise ValueError(f"training table lacks column(s) {missing}")
        sel = source.select(cols)
        return ray.data.from_arrow([sel.slice(s, BLOCK_ROWS) for s in range(0, sel.num_rows, BLOCK_ROWS)])
    if not source:
        raise ValueError("no Parquet files to train on")
    # Not read_parquet: its path resolution imports fsspec's HTTP filesystem, which fails
    # without aiohttp (not installed here) with an ImportError Ray does not catch. And one
    # task for all files, not one per file: each concurrent task needs its own Ray worker
    # process, and Ray kills idle ones after a second, so per-file tasks respawned up to
    # one process per file every epoch (minutes under load).
    items = ray.data.from_items([{"paths": [str(f) for f in source]}], override_num_blocks=1)
    return items.map_batches(read_files, batch_format="pyarrow", batch_size=1, num_cpus=data_cpus,
                             fn_kwargs={"columns": cols})


def ingest_options() -> Any:
    """Ray Data execution options for the training stream: order preserved (see module doc)."""
    from ray.train import DataConfig

    opts = DataConfig.default_ingest_options()
    opts.preserve_order = True
    return opts


def stream_windows(iterator: Any, window_rows: int, encoder: FeatureEncoder) -> Iterator[Arrays]:
    """Windows of ``window_rows`` rows from a worker's ``DataIterator`` (the last one
    shorter), encoded into the numpy arrays :func:`pretrain.loop.train_epoch` takes."""
    for batch in iterator.iter_batches(batch_size=window_rows, batch_format="pyarrow", prefetch_batches=1):
        yield to_arrays(encoder.encode(batch))


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri
