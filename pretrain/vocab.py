"""The feature vocabulary fitted by a distributed count over the log's Parquet files.

One Ray task per file streams the file in record batches (bounded memory), validates every
row by encoding it with an empty-vocabulary encoder (labels 0/1/null, known scenario,
sample_type ad/content, finite float ids, list hist_seq) and counts each categorical column
(``hist_seq`` events count toward the item field, as in :meth:`FeatureEncoder.fit`). The
driver merges the per-file ``(value, count)`` tables as they arrive, so it holds only
distinct values, never the training rows: its memory follows the vocabulary, not the log.
The result equals :meth:`FeatureEncoder.fit` on the concatenated rows (same counts, same
tie-breaking in :func:`pretrain.features.select_frequent`).

A bad row fails the fit with :class:`contracts.InputError`: ``<file>: <column message> at
row <row in that file>``.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts import DatasetSpec, InputError
from contracts.dataset import CANONICAL_SEQUENCE
from pretrain.features import FeatureEncoder, _as_string, training_columns

COUNT_BATCH_ROWS = 65_536
_ROW = re.compile(r"at row (\d+)")


def fit_vocabulary(
    files: list[str],
    spec: DatasetSpec,
    min_count: int = 1,
    max_vocab: int | None = None,
    *,
    task_cpus: float = 0.0,
) -> FeatureEncoder:
    """:meth:`FeatureEncoder.fit` over ``files`` without reading them on the driver (Ray
    must be initialised). Raises :class:`InputError` naming file, column and row."""
    counts = count_files(files, spec, task_cpus=task_cpus)
    return FeatureEncoder.from_counts(spec, counts, min_count, max_vocab)


def count_files(files: list[str], spec: DatasetSpec, *, task_cpus: float = 0.0) -> dict[str, pa.Table]:
    """Column -> table (``values`` string, ``counts`` int64) over every row of ``files``."""
    import ray

    if not files:
        raise ValueError("no Parquet files to fit the vocabulary on")
    canon = spec.canonical()
    task = ray.remote(num_cpus=task_cpus, max_retries=0)(count_and_validate)
    spec_json = canon.model_dump_json()
    # A bounded number of tasks in flight: with 0-CPU tasks Ray would otherwise start a
    # worker process per file at once, and finished counts would pile up unmerged.
    in_flight = max(2, int(ray.cluster_resources().get("CPU", 2)))
    todo = list(files)
    pending: dict = {}
    merged: dict[str, pa.Table] = {}
    while todo or pending:
        while todo and len(pending) < in_flight:
            f = todo.pop(0)
            pending[task.remote(f, spec_json)] = f
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        pending.pop(ref)
        result = ray.get(ref)
        if isinstance(result, str):  # the task's error line (a bad row): stop the others
            for r in pending:
                ray.cancel(r, force=True)
            raise InputError(result)
        merged = {c: _merge(merged.get(c), t) for c, t in result.items()}
    return merged


def count_and_validate(path: str, spec_json: str) -> dict[str, pa.Table] | str:
    """Per-file counts (the Ray task body; also callable in-process). Returns the error line
    instead of raising, so the driver gets one readable line, not a remote traceback."""
    spec = DatasetSpec.model_validate_json(spec_json)
    checker = FeatureEncoder(spec, {c: [] for c in spec.categorical_columns})
    seq_field = spec.sequence.item_field
    cols = training_columns(spec)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        return f"{path}: not a readable Parquet file ({e})"
    missing = [c for c in cols if c not in pf.schema_arrow.names]
    if missing:
        return f"{path}: column(s) {missing} missing"
    acc: dict[str, pa.Table] = {}
    offset = 0
    for rb in pf.iter_batches(batch_size=COUNT_BATCH_ROWS, columns=cols):
        batch = pa.Table.from_batches([rb])
        try:
            checker.encode_arrays(batch)  # the validation training relies on (names column, value, row)
        except ValueError as e:
            return f"{path}: " + _ROW.sub(lambda m, base=offset: f"at row {base + int(m.group(1))}", str(e))
        for col in spec.categorical_columns:
            values = _as_string(batch[col], col)
            if col == seq_field:
                values = pa.concat_arrays(
                    [values, _as_string(pc.list_flatten(batch[CANONICAL_SEQUENCE]), CANONICAL_SEQUENCE)]
                )
            vc = pc.value_counts(values.drop_null())
            t = pa.table({"values": vc.field("values"), "counts": vc.field("counts").cast(pa.int64())})
            acc[col] = _merge(acc.get(col), t)
        offset += batch.num_rows
    if not acc:  # an empty file: empty counts
        empty = pa.table({"values": pa.array([], pa.string()), "counts": pa.array([], pa.int64())})
        acc = {c: empty for c in spec.categorical_columns}
    return acc


def _merge(acc: pa.Table | None, new: pa.Table) -> pa.Table:
    if acc is None:
        return new
    both = pa.concat_tables([acc, new])
    out = both.group_by("values").aggregate([("counts", "sum")])
    return pa.table({"values": out["values"], "counts": out["counts_sum"]})
