"""Spark job: fold one day's sample-level representations into the published tables.

Time-decayed CR state of an entity at instant ``T`` (samples k with time t_k <= T)::

    S(T) = sum_k exp(-(T - t_k) / tau) * CR_k            # float64, shape [d]

which is exactly the recurrence ``S <- exp(-(t - t_prev)/tau) * S + CR_k`` over
time-ordered samples, decayed from the last sample to ``T``. Each ``ds`` partition is
the state at the day's cutoff ``T_d`` (end of the UTC day), so the next day continues
incrementally::

    S(T_d) = exp(-(T_d - T_prev)/tau) * S(T_prev) + sum_{k in day d} exp(-(T_d - t_k)/tau) * CR_k

The published ``vector`` is the normalised state (``none`` | ``l2`` | ``layernorm``,
the last without affine parameters): the decay, the normalisation and their constants are
:mod:`extract.vectors`' (the representation core). UR/IR tables hold each entity's latest
tower output. CR(u)/CR(i) fold the **ad samples only** by default
(``AggregateConfig.cr_samples``): LFM4Ads uses the ad branch's representations of ad
samples for ads; UR/IR (shared towers) see every sample. Entities not seen on ``d``
are carried forward from the previous partition (every partition is a full snapshot).

Two formulations of the CR state, equal to 1e-5 (tests check both against a numpy loop):

- ``arrow`` (the default, :mod:`extract.aggregate_arrow`): Spark schedules tasks over
  Parquet fragments, each task sums its vectors per entity in numpy (``mapInArrow``),
  Spark shuffles those partial sums by entity and a second ``mapInArrow`` adds them up;
- ``columns`` (:func:`decayed_state` + :func:`cr_table`): Spark SQL only, per-dimension
  ``sum`` aggregates re-assembled with ``array()``; works on any DataFrame of samples.
  The core's formulas written as Spark columns (same constants), selectable by
  ``AggregateConfig.formulation``.

UR/IR use Spark SQL (``max_by``). Only one row of validation counts reaches the driver.
"""

from __future__ import annotations

from pathlib import Path

from contracts import (
    REPRESENTATION_TABLES,
    CheckpointManifest,
    TableProperties,
    config_hash,
)
from engines import delta_io, get_spark
from extract import aggregate_arrow
from extract.config import AggregateConfig
from extract.publishing import (
    SPARK_TYPES,
    already_published,
    commit_publish,
    day_cutoff,
    prepare_publish,
)
from extract.samples import read_marker
from extract.vectors import L2_EPS, LN_EPS, decay_factor

# table -> (entity key column in the samples, representation column kind)
TABLE_SOURCES = {
    "user_ur": ("user_id", "ur"),
    "item_ir": ("item_id", "ir"),
    "user_cr": ("user_id", "cr"),
    "item_cr": ("item_id", "cr"),
}


def cutoff_seconds(ds: str) -> float:
    return day_cutoff(ds).timestamp()


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


def arrow_cr_table(
    spark,
    path: Path,
    dirs: dict[str, Path],
    key: str,
    col: str,
    dim: int,
    ds: str,
    model_version: str,
    layer: str,
    cfg: AggregateConfig,
    prev_ds: str | None,
):
    """CR table rows (contract columns) by :func:`extract.aggregate_arrow.decayed_cr_rows`:
    the samples of ``dirs`` plus the partition ``prev_ds`` of ``path`` decayed to ``ds``."""
    from pyspark.sql import functions as F

    cutoff = cutoff_seconds(ds)
    uris = [u for d in sorted(dirs) for u in aggregate_arrow.parquet_files(dirs[d])]
    prev_uris, decay = None, 0.0
    if prev_ds is not None:
        prev_uris = delta_io.day_file_uris(path, prev_ds)
        decay = decay_factor(cutoff - cutoff_seconds(prev_ds), cfg.tau_seconds)
    rows = aggregate_arrow.decayed_cr_rows(
        spark,
        uris,
        key,
        col,
        dim,
        cutoff,
        cfg.tau_seconds,
        cfg.normalisation,
        prev_uris,
        decay,
        sample_type=cr_sample_type(cfg),
    )
    return rows.select(
        "entity_id",
        F.lit(ds).alias("ds"),
        F.lit(model_version).alias("model_version"),
        F.lit(layer).alias("layer"),
        "vector",
        "updated_at",
        "sample_count",
        "decayed_sum",
    )


def daily_layer(manifest: CheckpointManifest, layers: list[str] | None, pinned: str | None = None) -> str:
    """The CR layer the daily run publishes: ``pinned`` (``aggregate.layer``), else the first
    of ``layers`` (``extract.layers``), else the manifest's ``default_cr_layer`` (what
    ``lfm4ads extract probe`` recorded, or the LFM4Ads default when never probed)."""
    return pinned or (layers[0] if layers else manifest.default_cr_layer)


def published_layer(table_path: Path, ds: str) -> str | None:
    """The ``layer`` of the published partition ``ds`` of a CR table (None if absent)."""
    if ds not in delta_io.list_days(table_path):
        return None
    for uri in delta_io.day_file_uris(table_path, ds):
        col = aggregate_arrow._open(aggregate_arrow._uri(uri)).read(columns=["layer"])
        if col.num_rows:
            return col["layer"][0].as_py()
    return None


def cr_sample_type(cfg: AggregateConfig) -> str | None:
    """The sample type CR(u)/CR(i) fold (None = every sample)."""
    return None if cfg.cr_samples == "all" else cfg.cr_samples


def previous_partition(spark, table_path: Path, name: str, ds: str):
    """(DataFrame of the newest partition strictly before ``ds``, its ds) or (None, None)."""
    days = [d for d in delta_io.list_days(table_path) if d < ds]
    if not days:
        return None, None
    uris = delta_io.day_file_uris(table_path, days[-1])
    # an explicit schema spares Spark a footer-reading job (and pins the types)
    names = REPRESENTATION_TABLES[name].arrow_schema(1).names
    ddl = ", ".join(f"{c} {SPARK_TYPES[c]}" for c in names if c != "ds")
    return spark.read.schema(ddl).parquet(*uris), days[-1]


def read_samples(spark, dirs: dict[str, Path]):
    """Union of the extracted days ``dirs`` (ds -> folder) with each row's day bounds
    (``_lo``/``_hi``, unix microseconds) for :func:`check_samples`."""
    from pyspark.sql import functions as F

    frames = []
    for d, folder in sorted(dirs.items()):
        hi = day_cutoff(d).timestamp() * 1e6
        frames.append(
            spark.read.parquet(str(folder.resolve()))
            .withColumn("_lo", F.lit(hi - 86400e6))
            .withColumn("_hi", F.lit(hi))
        )
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out


def check_samples(samples, ds: str, samples_dir) -> int:
    """Row count; ValueError when there are no samples or a timestamp lies outside its day."""
    from pyspark.sql import functions as F

    us = F.unix_micros(F.col("event_time"))
    outside = us.isNull() | (us < F.col("_lo")) | (us >= F.col("_hi"))
    row = samples.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.when(outside, 1).otherwise(0)).alias("bad"),
        F.min(F.when(outside, F.col("user_id"))).alias("example"),
    ).collect()[0]
    if not row["n"]:
        raise ValueError(f"{samples_dir}: no samples for ds={ds}; nothing published")
    if row["bad"]:
        raise ValueError(
            f"{samples_dir}: {row['bad']} sample(s) have event_time outside their day (UTC), "
            f"e.g. user_id={row['example']!r}; nothing published"
        )
    return int(row["n"])


def days_to_fold(
    samples_dir: Path, ds: str, prev_ds: str | None, model_version: str, layer: str, column: str
) -> dict[str, Path]:
    """``ds`` plus every extracted day after ``prev_ds`` (the newest published partition)
    that was never published: sibling ``ds=<d>`` folders of ``samples_dir``. Without them
    a run that publishes every N days would drop the samples of the days in between."""
    out = {ds: samples_dir}
    for folder in sorted(samples_dir.parent.glob("ds=*")):
        d = folder.name[3:]
        if d < ds and (prev_ds is None or d > prev_ds):
            marker = read_marker(folder)  # an unfinished day in between is an error, not a gap
            if marker.model_version != model_version:
                raise ValueError(
                    f"{folder}: extracted with model {marker.model_version}, aggregating for {model_version}"
                )
            if marker.layers.get(layer) != column:
                raise ValueError(f"{folder}: layer {layer!r} is not in column {column!r} there ({marker.layers})")
            out[d] = folder
    return out


def aggregate_day(
    samples_dir: str | Path,
    tables_root: str | Path,
    ds: str,
    manifest: CheckpointManifest,
    cfg: AggregateConfig | None = None,
    spark=None,
) -> dict[str, int]:
    """Publish ``user_ur``, ``item_ir``, ``user_cr``, ``item_cr`` for ``ds`` from the
    extraction in ``samples_dir``; returns table name -> Delta version holding ``ds``.

    Tables live at ``tables_root/<name>``. A table whose (ds, model version) publish is
    already committed is skipped unless ``cfg.force``. Everything is checked before the
    first commit (all four tables are validated, then committed one by one: Delta has no
    multi-table transaction); each table's commit is atomic and idempotent.
    """
    cfg = cfg or AggregateConfig()
    tables_root = Path(tables_root)
    marker = read_marker(samples_dir)
    if marker.ds != ds:
        raise ValueError(f"{samples_dir}: holds ds={marker.ds}, asked for {ds}")
    if marker.model_version != manifest.model_version:
        raise ValueError(
            f"{samples_dir}: extracted with model {marker.model_version}, aggregating for {manifest.model_version}"
        )
    layer = cfg.layer or next(iter(marker.layers))
    if layer not in marker.layers:
        raise ValueError(f"{samples_dir}: layer {layer!r} was not extracted; it holds {sorted(marker.layers)}")
    cr_col = marker.layers[layer]
    mv = manifest.model_version
    names = {"user_ur": "user_tower", "item_ir": "item_tower", "user_cr": layer, "item_cr": layer}
    todo = {n: l for n, l in names.items() if cfg.force or not already_published(tables_root / n, n, mv, ds)}
    if not todo:
        return {n: delta_io.open_table(tables_root / n).version() for n in names}

    spark = spark or get_spark(cfg.spark_master)
    samples_dir = Path(samples_dir)
    frames: dict[tuple, object] = {}  # days folded -> checked samples frame (shared by tables)
    # settings that cannot change the published rows stay out of the hash
    chash = config_hash(
        cfg.model_copy(
            update={
                "force": False,
                "spark_master": None,
                "write_path": "auto",
                "formulation": "arrow",
                "vacuum_retention_hours": 168,
            }
        )
    )
    versions: dict[str, int] = {}
    prepared = []
    for name in names:
        if name not in todo:
            versions[name] = delta_io.open_table(tables_root / name).version()
            continue
        key, kind = TABLE_SOURCES[name]
        col = cr_col if kind == "cr" else kind
        dim = marker.dims[col]
        path = tables_root / name
        prev, prev_ds = previous_partition(spark, path, name, ds)
        dirs = days_to_fold(samples_dir, ds, prev_ds, mv, layer, cr_col)
        key_days = tuple(sorted(dirs))
        if key_days not in frames:
            frames[key_days] = read_samples(spark, dirs)
            check_samples(frames[key_days], ds, samples_dir)
        samples = frames[key_days]
        if kind == "cr":
            props = TableProperties(
                dim=dim,
                normalisation=cfg.normalisation,
                source_checkpoint=mv,
                config_hash=chash,
                tau_seconds=cfg.tau_seconds,
            )
            if cfg.formulation == "arrow":
                df = arrow_cr_table(spark, path, dirs, key, col, dim, ds, mv, layer, cfg, prev_ds)
            else:
                from pyspark.sql import functions as F

                only = cr_sample_type(cfg)
                kept = samples if only is None else samples.filter(F.col("sample_type") == only)
                state = decayed_state(kept, key, col, dim, ds, cfg.tau_seconds, prev, prev_ds)
                df = cr_table(state, dim, ds, mv, layer, cfg.normalisation)
        else:
            props = TableProperties(dim=dim, normalisation="none", source_checkpoint=mv, config_hash=chash)
            other = "item_id" if key == "user_id" else "user_id"
            df = latest_table(samples, key, other, col, ds, mv, todo[name], prev)
        # one row per entity_id by construction (groupBy + full outer join on it)
        try:
            prepared.append(
                prepare_publish(
                    path,
                    name,
                    ds,
                    df,
                    props,
                    write_path=cfg.write_path,
                    unique_by_construction=True,
                    vacuum_retention_hours=cfg.vacuum_retention_hours,
                )
            )
        except BaseException as e:
            for p in prepared:
                p.release()
            msg = aggregate_arrow.bad_input(e)
            if msg:  # a bad sample found inside a Spark task: the same error as on the driver
                raise ValueError(msg) from None
            raise
    # every table validated before the first commit: a contract break publishes nothing
    for p in prepared:
        versions[p.name] = commit_publish(p)
    return versions
