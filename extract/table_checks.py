"""The table contract's row rules (:mod:`contracts.table_rules`) compiled to two checks.

:func:`validate_arrow` checks a ``pyarrow.Table`` in memory; :func:`validate_spark` checks a
Spark DataFrame in ONE aggregation (nothing collected but one row of counts and example
ids). Both walk the same :func:`contracts.table_rules.row_rules` list and report the first
broken rule with :func:`reject`'s message, the example being the smallest offending
``entity_id``, so the same bad input gets the same :class:`PublishError` either way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import TableProperties
from contracts.table_rules import DUPLICATE_PROBLEM, UNIQUE_KEY, RowRule, row_rules
from contracts.tables import PUBLISHED_TABLES
from extract.vectors import fixed_size, to_numpy


class PublishError(ValueError):
    """Data broke the table contract; nothing was committed."""


def spark_type(t: pa.DataType) -> str:
    """The Spark SQL type (``DataFrame.dtypes`` spelling) a contract column of Arrow type ``t`` has."""
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
        return f"array<{spark_type(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return {pa.string(): "string", pa.float32(): "float", pa.int64(): "bigint"}[t]


# column -> Spark type, from the Arrow schemas (CR tables have every column)
SPARK_TYPES = {f.name: spark_type(f.type) for t in PUBLISHED_TABLES.values() for f in t.arrow_schema(1)}


def reject(name: str, ds: str, count: int, problem: str, example) -> None:
    """Raise the :class:`PublishError` for ``count`` rows with ``problem`` (none: return)."""
    if count:
        raise PublishError(
            f"{name} ds={ds}: {count} row(s) {problem}, e.g. entity_id={None if example is None else str(example)!r}; "
            "nothing committed"
        )


def _rules(schema: pa.Schema, props: TableProperties, ds: str) -> list[RowRule]:
    return row_rules(schema.names, dim=props.dim, model_version=props.source_checkpoint, ds=ds)


# --- Arrow -----------------------------------------------------------------------------
def _arrow_broken(data: pa.Table, rule: RowRule, dim: int) -> np.ndarray:
    """Bool mask of the rows of ``data`` that break ``rule``."""
    col = data[rule.column].combine_chunks()
    if rule.kind == "not_null":
        return np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    if rule.kind == "length":
        return pc.list_value_length(col).to_numpy(zero_copy_only=False) != rule.value
    if rule.kind == "finite":
        return ~np.isfinite(to_numpy(col, dim, np.float64)).all(axis=1)
    if rule.kind == "equals":
        return np.asarray(pc.not_equal(col, rule.value).to_numpy(zero_copy_only=False))
    # before: compared as UTC microseconds, the unit of the contract's updated_at
    ts = col.cast(pa.timestamp("us", tz="UTC"))
    cutoff = pa.scalar(rule.value, pa.timestamp("us", tz="UTC"))
    return np.asarray(pc.greater_equal(ts, cutoff).to_numpy(zero_copy_only=False))


def validate_arrow(name: str, ds: str, data: pa.Table, schema: pa.Schema, props: TableProperties) -> pa.Table:
    """Check ``data`` against the contract; return it cast to exactly ``schema``."""
    missing = [f.name for f in schema if f.name not in data.column_names]
    extra = [c for c in data.column_names if c not in schema.names]
    if missing or extra:
        raise PublishError(f"{name} ds={ds}: columns missing {missing}, unexpected {extra}; nothing committed")
    ids = np.asarray(data[UNIQUE_KEY].to_pylist(), dtype=object)
    for rule in _rules(schema, props, ds):
        broken = _arrow_broken(data, rule, props.dim)
        named = [str(i) for i in ids[broken] if i is not None]
        reject(name, ds, int(broken.sum()), rule.problem, min(named) if named else None)
    uniq, counts = np.unique(ids.astype(str), return_counts=True) if len(ids) else (ids, np.zeros(0))
    dup = counts > 1
    if dup.any():
        reject(name, ds, int(counts[dup].sum()), DUPLICATE_PROBLEM, str(uniq[dup][0]))
    cols = []
    for f in schema:
        col = data[f.name].combine_chunks()
        if pa.types.is_fixed_size_list(f.type):
            col = fixed_size(col, props.dim)
        cols.append(col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


# --- Spark -----------------------------------------------------------------------------
def _spark_broken(rule: RowRule):
    """The Spark Column that is true on the rows that break ``rule``."""
    from pyspark.sql import functions as F

    col = F.col(rule.column)
    if rule.kind == "not_null":
        return col.isNull()
    if rule.kind == "length":
        return F.size(col) != rule.value
    if rule.kind == "finite":
        return F.exists(col, lambda x: F.isnan(x) | (F.abs(x) == float("inf")) | x.isNull())
    if rule.kind == "equals":
        return col != F.lit(rule.value)
    # before: the cutoff as a session-time literal, as Spark's timestamps compare
    return col >= F.to_timestamp(F.lit(rule.value.strftime("%Y-%m-%d %H:%M:%S")))


def validate_spark(
    name: str, ds: str, df, schema: pa.Schema, props: TableProperties, check_unique: bool = True
) -> None:
    """The same checks as :func:`validate_arrow`, as ONE Spark aggregation."""
    from pyspark.sql import functions as F

    have = dict(df.dtypes)
    missing = [c for c in schema.names if c not in have]
    extra = [c for c in have if c not in schema.names]
    wrong = [f"{c}: {have[c]} (want {SPARK_TYPES[c]})" for c in schema.names if c in have and have[c] != SPARK_TYPES[c]]
    if missing or extra or wrong:
        raise PublishError(
            f"{name} ds={ds}: columns missing {missing}, unexpected {extra}, mistyped {wrong}; nothing committed"
        )
    rules = _rules(schema, props, ds)
    eid = F.col(UNIQUE_KEY)
    aggs = [F.count(F.lit(1)).alias("n")]
    if check_unique:
        aggs.append(F.countDistinct(eid).alias("distinct_ids"))
    for i, rule in enumerate(rules):
        hit = F.coalesce(_spark_broken(rule), F.lit(False))
        aggs.append(F.sum(F.when(hit, 1).otherwise(0)).alias(f"c{i}"))
        aggs.append(F.min(F.when(hit, F.coalesce(eid, F.lit("<null>")))).alias(f"e{i}"))
    row = df.agg(*aggs).collect()[0]
    for i, rule in enumerate(rules):
        reject(name, ds, int(row[f"c{i}"] or 0), rule.problem, None if row[f"e{i}"] == "<null>" else row[f"e{i}"])
    # rules[0] is the null-id rule: countDistinct skips nulls
    if check_unique and row["distinct_ids"] != row["n"] - int(row["c0"] or 0):
        dup = df.groupBy(UNIQUE_KEY).count().where("count > 1")
        first = dup.orderBy(UNIQUE_KEY).first()
        reject(name, ds, int(dup.agg(F.sum("count")).first()[0]), DUPLICATE_PROBLEM, first[UNIQUE_KEY])
