"""The decayed CR aggregation as two Arrow/numpy stages scheduled by Spark (the fast path).

Same result as :func:`extract.aggregate_sql.decayed_state` + :func:`extract.aggregate_sql.cr_table`
(the state ``S(T) = sum_k exp(-(T - t_k)/tau) CR_k + exp(-(T - T_prev)/tau) S(T_prev)``),
formulated so that no float array ever goes through Spark's row format:

1. **partial** (``mapInArrow`` over ``spark.range`` of *fragment* indexes; a fragment is
   a file URI + a row-group range): each task reads its fragment with pyarrow (zero-copy ``fixed_size_list``),
   weights every vector by ``exp((t - T)/tau)`` and sums per entity with
   ``np.bincount`` in float64. It emits one row per entity *in that fragment*:
   ``entity_id``, ``s`` (the float64[d] partial sum as 8*d raw bytes: a binary column
   Spark shuffles as one opaque value), ``n``, ``last_t``. The previous partition's rows
   (``decayed_sum`` scaled by ``exp(-(T - T_prev)/tau)``) are fragments of the same job.
2. **final**: Spark hash-shuffles the partials by ``entity_id`` (``repartition``) and a
   second ``mapInArrow`` sums each entity's partials, normalises and emits the table
   rows (``vector``/``decayed_sum`` as ``array<float>``, one row per entity).

Nothing is collected to the driver (it only lists files and reads Parquet footers to
split them). On a cluster the fragment URIs must be readable from the executors
(``pyarrow.fs`` handles ``file://``, ``s3://``, ``gs://``, ``hdfs://``), which is
already true of any path Spark itself reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extract.vectors import bad_rows, decay_weights, group_max, normalise, segment_sum, to_arrow, to_numpy

TS = pa.timestamp("us", tz="UTC")

PARTIAL_DDL = "entity_id string, s binary, n bigint, last_t timestamp"
CR_DDL = "entity_id string, vector array<float>, updated_at timestamp, sample_count bigint, decayed_sum array<{}>"
SAMPLES, STATE = 0, 1
NOTHING = "nothing published"
OUT_BATCH = 65_536  # rows per Arrow batch handed back to Spark


def bad_input(error: BaseException) -> str | None:
    """The message of a bad-input ValueError raised inside a Spark Python worker (Spark
    re-raises it as a ``PythonException`` holding the worker's traceback), else None."""
    import re

    m = re.search(r"ValueError: (.+?; " + NOTHING + ")", str(error))
    return m.group(1) if m else None


# --- fragments (driver: file listing and footers only) ---------------------------------
def _uri(path) -> str:
    s = str(path)
    return s if "://" in s else Path(s).resolve().as_uri()


def _open(uri: str):
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return pq.ParquetFile(filesystem.open_input_file(path))


def parquet_files(folder: str | Path) -> list[str]:
    """Data files of a folder as Spark and pyarrow see them (``_*`` and ``.*`` skipped)."""
    return sorted(_uri(p) for p in Path(folder).glob("*.parquet") if not p.name.startswith(("_", ".")))


def fragments(uris: list[str], kind: int, target_rows: int = 262_144) -> list[tuple[str, int, int, int]]:
    """(uri, first row group, end row group, kind) units of about ``target_rows`` rows."""
    out = []
    for uri in uris:
        meta = _open(uri).metadata
        lo, rows = 0, 0
        for rg in range(meta.num_row_groups):
            rows += meta.row_group(rg).num_rows
            if rows >= target_rows:
                out.append((uri, lo, rg + 1, kind))
                lo, rows = rg + 1, 0
        if lo < meta.num_row_groups or meta.num_row_groups == 0:
            out.append((uri, lo, meta.num_row_groups, kind))
    return out


# --- numpy kernels (the decay and normalisation are extract.vectors') -------------------
def vectors(arr, dim: int, where: str, ids) -> np.ndarray:
    """[n, dim] float32 of a list/fixed_size_list column; ValueError naming ``where``,
    the row count and an example id for null vectors or vectors of another length."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr  # once, not per call below
    bad = bad_rows(arr, dim)
    if bad.any():
        raise ValueError(
            f"{where}: {int(bad.sum())} row(s) have a null vector or one whose length is not {dim}, "
            f"e.g. id={ids[int(np.flatnonzero(bad)[0])].as_py()!r}; {NOTHING}"
        )
    return to_numpy(arr, dim)


def _binary(s: np.ndarray) -> pa.Array:
    """[k, d] float64 -> binary array of k values of 8*d bytes (zero-copy)."""
    s = np.ascontiguousarray(s, np.float64)
    k, width = s.shape[0], s.shape[1] * 8
    offsets = pa.py_buffer((np.arange(k + 1, dtype=np.int32) * width).tobytes())
    return pa.Array.from_buffers(pa.binary(), k, [None, offsets, pa.py_buffer(s.tobytes())])


def _from_binary(arr: pa.Array, dim: int) -> np.ndarray:
    """Inverse of :func:`_binary`: [k, dim] float64."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.type != pa.binary():
        arr = arr.cast(pa.binary())
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    if len(arr) and np.any(np.diff(offsets) != dim * 8):
        raise ValueError(f"partial sums of the wrong width (want {dim * 8} bytes)")
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.view(np.float64).reshape(len(arr), dim)


def _partial_batch(ids: pa.Array, s: np.ndarray, n: np.ndarray, last: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [ids.cast(pa.string()), _binary(s), pa.array(n, pa.int64()), pa.array(last, pa.int64()).cast(TS)],
        names=["entity_id", "s", "n", "last_t"],
    )


def partial_of_samples(
    table: pa.Table, key: str, col: str, dim: int, cutoff: float, tau: float, where: str
) -> pa.RecordBatch:
    """Per-entity partial state of a block of samples (entity ids may be null: kept as a
    group, so publishing rejects them with the contract's message)."""
    enc = pc.dictionary_encode(table[key].combine_chunks(), null_encoding="encode")
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.intp)
    k = len(enc.dictionary)
    t_us = table["event_time"].combine_chunks().cast(TS).cast(pa.int64()).to_numpy(zero_copy_only=False)
    x = vectors(table[col], dim, where, table[key].combine_chunks())
    w = decay_weights(t_us / 1e6, cutoff, tau)
    return _partial_batch(
        enc.dictionary, segment_sum(codes, x, k, w), np.bincount(codes, minlength=k), group_max(codes, t_us, k)
    )


def partial_of_state(table: pa.Table, dim: int, decay: float, where: str) -> pa.RecordBatch:
    """The previous partition's rows as partials, decayed by ``decay`` (one row per entity)."""
    ids = table["entity_id"].combine_chunks()
    s = vectors(table["decayed_sum"], dim, where, ids).astype(np.float64) * decay
    t = table["updated_at"].combine_chunks().cast(TS).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return _partial_batch(ids, s, table["sample_count"].combine_chunks().to_numpy(zero_copy_only=False), t)


def _sum_partials(table: pa.Table, dim: int):
    """(ids, s [k, d] float64, n [k], last_t [k] int64 us) of partial rows, summed per entity."""
    enc = pc.dictionary_encode(table["entity_id"].combine_chunks(), null_encoding="encode")
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.intp)
    k = len(enc.dictionary)
    s = segment_sum(codes, _from_binary(table["s"], dim), k)
    # counts stay exact in float64 below 2**53
    n = np.rint(np.bincount(codes, weights=table["n"].to_numpy().astype(np.float64), minlength=k)).astype(np.int64)
    last = group_max(codes, table["last_t"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False), k)
    return enc.dictionary, s, n, last


def combine_partials(table: pa.Table, dim: int) -> pa.RecordBatch:
    """Partial rows with repeated entities -> one partial row per entity."""
    return _partial_batch(*_sum_partials(table, dim))


def final_of_partials(table: pa.Table, dim: int, normalisation: str, exact_state: bool = False) -> pa.RecordBatch:
    """Sum each entity's partials (all of them are in ``table``) into its table row."""
    ids, s, n, last = _sum_partials(table, dim)
    return pa.RecordBatch.from_arrays(
        [
            ids.cast(pa.string()),
            to_arrow(normalise(s, normalisation), fixed=False),
            pa.array(last, pa.int64()).cast(TS),
            pa.array(n, pa.int64()),
            to_arrow(s, np.float64 if exact_state else np.float32, fixed=False),
        ],
        names=["entity_id", "vector", "updated_at", "sample_count", "decayed_sum"],
    )


# --- the Spark job ---------------------------------------------------------------------
def decayed_cr_rows(
    spark,
    sample_uris: list[str],
    key: str,
    col: str,
    dim: int,
    cutoff: float,
    tau: float,
    normalisation: str,
    prev_uris: list[str] | None = None,
    decay: float = 0.0,
    target_rows: int = 262_144,
    partitions: int | None = None,
    exact_state: bool = False,
    tasks_per_core: int = 2,
    sample_type: str | None = None,
):
    """DataFrame[entity_id, vector, updated_at, sample_count, decayed_sum]: the decayed CR
    state at ``cutoff`` (unix seconds) of the samples in ``sample_uris`` (Parquet with
    ``key``, ``event_time``, ``col``), plus the previous partition's rows in ``prev_uris``
    scaled by ``decay``. ``vector`` is the ``normalisation`` of the state; ``decayed_sum``
    is float32 as the table stores it (``exact_state``: the float64 sums, for checks).
    Fragments of about ``target_rows`` rows are spread over ``tasks_per_core`` tasks per
    core of the cluster; ``partitions`` (default ``spark.sql.shuffle.partitions``) tasks
    add the partials up. ``sample_type`` (e.g. ``"ad"``): only samples of that type enter
    the state (LFM4Ads: the ad branch's CRs of ad samples make the ads CR(u)/CR(i))."""
    frags = fragments(sample_uris, SAMPLES, target_rows) + fragments(prev_uris or [], STATE, target_rows)
    cols = [key, "event_time", col] + (["sample_type"] if sample_type else [])
    state_cols = ["entity_id", "decayed_sum", "sample_count", "updated_at"]

    def partial(batches):
        # a task's fragments are combined before the shuffle (fewer, wider partial rows)
        parts = []
        for b in batches:
            for i in b.column(0).to_pylist():
                uri, lo, hi, kind = frags[i]
                pf = _open(uri)
                where = f"{uri} (row groups {lo}-{hi - 1})"
                if kind == SAMPLES:
                    t = pf.read_row_groups(range(lo, hi), columns=cols)
                    if sample_type:
                        t = t.filter(pc.equal(t["sample_type"], sample_type))
                    if t.num_rows:
                        parts.append(partial_of_samples(t, key, col, dim, cutoff, tau, where))
                else:
                    t = pf.read_row_groups(range(lo, hi), columns=state_cols)
                    if t.num_rows:
                        parts.append(partial_of_state(t, dim, decay, where))
        if len(parts) == 1:
            yield parts[0]
        elif parts:
            yield combine_partials(pa.Table.from_batches(parts), dim)

    def final(batches):
        batches = [b for b in batches if b.num_rows]
        if batches:
            # one partition's partials are summed at once: size ``partitions`` so they fit a worker
            out = final_of_partials(pa.Table.from_batches(batches), dim, normalisation, exact_state)
            for off in range(0, out.num_rows, OUT_BATCH):
                yield out.slice(off, OUT_BATCH)

    _ship_by_value()
    parts = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    tasks = max(1, min(len(frags), tasks_per_core * spark.sparkContext.defaultParallelism))
    # a JVM-side range of fragment indexes (the list itself travels in the closure): no
    # Python RDD stage to feed the first mapInArrow
    return (
        spark.range(0, len(frags), numPartitions=tasks)
        .mapInArrow(partial, PARTIAL_DDL)
        .repartition(parts, "entity_id")
        .mapInArrow(final, CR_DDL.format("double" if exact_state else "float"))
    )


def _ship_by_value() -> None:
    """Pickle this module's functions (and the representation core's) by value into the
    Spark tasks: a Python worker then imports only numpy and pyarrow, not the ``extract``
    package (which pulls in Ray and the model: about 2 s per worker measured here)."""
    import sys

    from pyspark import cloudpickle

    from extract import vectors

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(vectors)
