"""Sharded training reads: each Ray Train worker reads and encodes only its share of an
epoch's rows, straight from the log's Parquet files.

The epoch is the training files' rows in :func:`log_files_for_days` order (days sorted,
files sorted within a day). :func:`plan_files` reads only the files' footers (row count
per row group), on the driver. With W workers the epoch is cut into W equal, contiguous
slots of ``N // W`` rows (the last ``N % W`` rows sit the epoch out); in epoch e worker r
takes slot ``(r + e) % W`` (:func:`shard_range`), so assignments are disjoint, cover the
epoch, rotate between epochs and depend only on (files, epoch, rank, world). A worker
decodes only the row groups overlapping its slot (:func:`read_range`), so read and decode
cost per worker is divided by W, and every worker holds the same row count (DDP runs the
same step count everywhere).

Inside its slot a worker cuts windows of ``train.shuffle_window`` rows and permutes each
with a (seed, epoch, window, rank)-seeded permutation (``pretrain.loop.window_order``).
Nothing depends on scheduling, so a resumed run replays exactly the epochs an uninterrupted
run would, and with one worker the plain loop over :func:`read_in_stream_order` with
``pretrain.loop.array_windows`` sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from contracts import DatasetSpec
from pretrain.data import Arrays
from pretrain.features import FeatureEncoder, training_columns


def log_files_for_days(log_path: str | Path, days: list[str]) -> list[str]:
    """Local Parquet paths of ``days`` of the canonical log: days sorted, files sorted
    within a day (the stream order)."""
    from datasources.log_store import log_files

    out: list[str] = []
    for d in sorted(days):
        out += sorted(_local(u) for u in log_files(log_path, d))
    return out


def read_in_stream_order(files: list[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of ``files`` in stream order (a plain-loop reference for tests and benchmarks)."""
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")


def stream_columns_for(spec: DatasetSpec) -> list[str]:
    """The canonical columns training reads (nothing else is read from the log)."""
    return training_columns(spec)


def stream_columns(encoder: FeatureEncoder) -> list[str]:
    return stream_columns_for(encoder.spec)


@dataclass(frozen=True)
class FilePlan:
    """The epoch's files with the row count of each row group (from the footers)."""

    files: list[str]
    row_groups: list[list[int]] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(sum(g) for g in self.row_groups)


def plan_files(files: list[str]) -> FilePlan:
    """Footers only: no row is read. Names a file that is not readable Parquet."""
    from contracts import InputError

    if not files:
        raise ValueError("no Parquet files to train on")
    groups = []
    for f in files:
        try:
            md = pq.ParquetFile(f).metadata
        except Exception as e:
            raise InputError(f"{f}: not a readable Parquet file ({e})") from e
        groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
    return FilePlan([str(f) for f in files], groups)


def shard_range(total_rows: int, epoch: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the epoch's rows that worker ``rank`` of ``world`` trains on."""
    per = total_rows // world
    slot = (rank + epoch) % world
    return slot * per, slot * per + per


def read_range(
    plan: FilePlan, start: int, stop: int, columns: list[str], counter: dict | None = None
) -> Iterator[pa.Table]:
    """Rows [start, stop) of the plan, in order, decoding only the row groups that overlap.
    ``counter['rows_read']`` adds the rows decoded (whole row groups)."""
    pos = 0
    for path, groups in zip(plan.files, plan.row_groups):
        file_end = pos + sum(groups)
        if file_end <= start or pos >= stop:
            pos = file_end
            continue
        pf = pq.ParquetFile(path)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} missing")
        for i, n in enumerate(groups):
            lo, hi = pos, pos + n
            pos = hi
            if hi <= start or lo >= stop:
                continue
            t = pf.read_row_group(i, columns=columns)
            if counter is not None:
                counter["rows_read"] = counter.get("rows_read", 0) + t.num_rows
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            yield t.slice(a, b - a)
        pos = file_end


def rebatch(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Consecutive tables of exactly ``rows`` rows (the last one shorter)."""
    buf: list[pa.Table] = []
    have = 0
    for t in tables:
        while t.num_rows:
            take = min(rows - have, t.num_rows)
            buf.append(t.slice(0, take))
            have += take
            t = t.slice(take)
            if have == rows:
                yield pa.concat_tables(buf, promote_options="default")
                buf, have = [], 0
    if have:
        yield pa.concat_tables(buf, promote_options="default")


def shard_windows(
    plan: FilePlan,
    encoder: FeatureEncoder,
    window_rows: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    counter: dict | None = None,
) -> Iterator[Arrays]:
    """This worker's encoded windows of ``epoch`` (see module doc)."""
    start, stop = shard_range(plan.total_rows, epoch, rank, world)
    cols = stream_columns(encoder)
    for window in rebatch(read_range(plan, start, stop, cols, counter), window_rows):
        yield encoder.encode_arrays(window)


def _local(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri
