"""The Ray Data read task of the training stream (``pretrain.stream``): Parquet files ->
Arrow blocks, in file order. Imports pyarrow only, so a fresh Ray worker process running
it starts in about a second (no torch)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

BLOCK_ROWS = 16_384


def read_files(batch: pa.Table, columns: list[str]) -> Iterator[pa.Table]:
    """Every file named in ``batch['paths']`` (a list column), in order, as blocks of at
    most ``BLOCK_ROWS`` rows. One task reads all files of an epoch: a generator task stays
    busy (not idle) while the consumer applies backpressure, so Ray does not kill and
    respawn its worker process between files."""
    for paths in batch["paths"].to_pylist():
        for path in paths:
            pf = pq.ParquetFile(path)
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise ValueError(f"{path}: column(s) {missing} missing")
            for rb in pf.iter_batches(batch_size=BLOCK_ROWS, columns=columns):
                yield pa.Table.from_batches([rb])
