"""The Spark SQL formulations of the published tables: the ``columns`` CR state (per-dimension
``sum`` aggregates re-assembled with ``array()``, the representation core's formulas as
Spark columns with the same constants) and the UR/IR latest representation (``max_by``).

Shapes: ``dim`` = d, the vector width; a state DataFrame holds ``entity_id``,
``s0..s{d-1}`` (double), ``n`` and ``last_t`` (see :mod:`extract.aggregate` for the
formula). Works on any DataFrame of samples; ``extract.aggregate_arrow`` is the fast path
for the CR state.
"""

from __future__ import annotations

from extract.aggregate_inputs import cutoff_seconds
from extract.vectors import L2_EPS, LN_EPS, decay_factor


def _normalised(cols: list, normalisation: str) -> list:
    """Columns of the normalised vector from per-dimension double columns
    (:func:`extract.vectors.normalise` as Spark columns)."""
    from pyspark.sql import functions as F

    d = len(cols)
    if normalisation == "none":
        return cols
    if normalisation == "l2":
        norm = F.sqrt(sum((c * c for c in cols[1:]), cols[0] * cols[0]))
        return [c / F.greatest(norm, F.lit(L2_EPS)) for c in cols]
    mean = sum(cols[1:], cols[0]) / d
    var = sum(((c - mean) * (c - mean) for c in cols[1:]), (cols[0] - mean) * (cols[0] - mean)) / d
    return [(c - mean) / F.sqrt(var + F.lit(LN_EPS)) for c in cols]


def decayed_state(samples, key: str, col: str, dim: int, ds: str, tau: float, prev=None, prev_ds: str | None = None):
    """State at the cutoff of ``ds``: DataFrame[entity_id, s0..s{d-1} (double), n, last_t].

    ``samples``: rows with ``key``, ``event_time`` and ``col`` (array<float>[dim]) at or
    before the cutoff. ``prev``: the previous partition's rows (``entity_id``,
    ``decayed_sum``, ``sample_count``, ``updated_at``) describing the state at the
    cutoff of ``prev_ds``; it is decayed to this cutoff and added.
    """
    from pyspark.sql import functions as F

    cutoff = cutoff_seconds(ds)
    t = F.unix_micros(F.col("event_time")).cast("double") / 1e6
    weighted = samples.select(
        F.col(key).alias("entity_id"),
        F.col("event_time"),
        F.exp((t - F.lit(cutoff)) / F.lit(float(tau))).alias("w"),  # extract.vectors.decay_weights
        F.col(col).alias("v"),
    )
    today = weighted.groupBy("entity_id").agg(
        *[F.sum(F.col("w") * F.col("v")[i].cast("double")).alias(f"s{i}") for i in range(dim)],
        F.count(F.lit(1)).alias("n"),
        F.max("event_time").alias("last_t"),
    )
    if prev is None:
        return today
    decay = decay_factor(cutoff - cutoff_seconds(prev_ds), tau)
    old = prev.select(
        "entity_id",
        *[(F.col("decayed_sum")[i].cast("double") * F.lit(decay)).alias(f"p{i}") for i in range(dim)],
        F.col("sample_count").alias("pn"),
        F.col("updated_at").alias("pt"),
    )
    j = today.join(old, "entity_id", "full_outer")
    return j.select(
        "entity_id",
        *[
            (F.coalesce(F.col(f"s{i}"), F.lit(0.0)) + F.coalesce(F.col(f"p{i}"), F.lit(0.0))).alias(f"s{i}")
            for i in range(dim)
        ],
        (F.coalesce(F.col("n"), F.lit(0)) + F.coalesce(F.col("pn"), F.lit(0))).cast("bigint").alias("n"),
        F.greatest(F.col("last_t"), F.col("pt")).alias("last_t"),
    )


def cr_table(state, dim: int, ds: str, model_version: str, layer: str, normalisation: str):
    """Rows of a CR table (contract columns) from :func:`decayed_state`'s output."""
    from pyspark.sql import functions as F

    s = [F.col(f"s{i}") for i in range(dim)]
    return state.select(
        F.col("entity_id"),
        F.lit(ds).alias("ds"),
        F.lit(model_version).alias("model_version"),
        F.lit(layer).alias("layer"),
        F.array(*[c.cast("float") for c in _normalised(s, normalisation)]).alias("vector"),
        F.col("last_t").alias("updated_at"),
        F.col("n").cast("bigint").alias("sample_count"),
        F.array(*[c.cast("float") for c in s]).alias("decayed_sum"),
    )


def latest_table(samples, key: str, other_key: str, col: str, ds: str, model_version: str, layer: str, prev=None):
    """UR/IR table rows: each entity's representation at its latest event (ties: larger
    ``other_key``), carried forward from ``prev`` for entities absent today."""
    from pyspark.sql import functions as F

    today = samples.groupBy(F.col(key).alias("entity_id")).agg(
        F.max_by(F.col(col), F.struct(F.col("event_time"), F.col(other_key))).alias("v"),
        F.count(F.lit(1)).alias("n"),
        F.max("event_time").alias("last_t"),
    )
    if prev is not None:
        old = prev.select(
            "entity_id", F.col("vector").alias("pv"), F.col("sample_count").alias("pn"), F.col("updated_at").alias("pt")
        )
        j = today.join(old, "entity_id", "full_outer")
        today = j.select(
            "entity_id",
            F.coalesce(F.col("v"), F.col("pv")).alias("v"),
            (F.coalesce(F.col("n"), F.lit(0)) + F.coalesce(F.col("pn"), F.lit(0))).alias("n"),
            F.coalesce(F.col("last_t"), F.col("pt")).alias("last_t"),
        )
    return today.select(
        "entity_id",
        F.lit(ds).alias("ds"),
        F.lit(model_version).alias("model_version"),
        F.lit(layer).alias("layer"),
        F.col("v").cast("array<float>").alias("vector"),
        F.col("last_t").alias("updated_at"),
        F.col("n").cast("bigint").alias("sample_count"),
    )
