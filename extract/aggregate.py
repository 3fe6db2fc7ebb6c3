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
- ``columns`` (:mod:`extract.aggregate_sql`: ``decayed_state`` + ``cr_table``): Spark SQL only, per-dimension
  ``sum`` aggregates re-assembled with ``array()``; works on any DataFrame of samples.
  The core's formulas written as Spark columns (same constants), selectable by
  ``AggregateConfig.formulation``.

UR/IR use Spark SQL (``max_by``, ``extract.aggregate_sql.latest_table``). What a day folds
(sample days, previous partitions) is :mod:`extract.aggregate_inputs`. Only one row of
validation counts reaches the driver.
"""

from __future__ import annotations

from pathlib import Path

from contracts import CheckpointManifest, TableProperties, config_hash
from engines import delta_io, get_spark
from engines.fault_points import fault_point
from extract import aggregate_arrow
from extract.aggregate_inputs import check_samples, cutoff_seconds, days_to_fold, previous_partition, read_samples
from extract.aggregate_sql import cr_table, decayed_state, latest_table
from extract.config import AggregateConfig
from extract.publishing import already_published, commit_publish, prepare_publish
from extract.samples import read_marker
from extract.vectors import decay_factor

# table -> (entity key column in the samples, representation column kind)
TABLE_SOURCES = {
    "user_ur": ("user_id", "ur"),
    "item_ir": ("item_id", "ir"),
    "user_cr": ("user_id", "cr"),
    "item_cr": ("item_id", "cr"),
}


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
        fault_point("extract:committed")
    return versions
