"""The extract step: extract every day up to ``ds`` (Ray Data), gate each day, and aggregate and
publish the snapshot days (Spark -> Delta). :func:`publish_days` says which days get a snapshot."""

from __future__ import annotations

import time

from contracts import RunLayout
from pipelines.config import RunConfig
from pipelines.state import RunState


def publish_days(cfg: RunConfig, st: RunState) -> list[str]:
    """Days that get a published snapshot: every ``publish_every``-th day, the day before
    each split edge (so each split's first day sees fresh vectors) and ``ds``."""
    days = [d for d in st.days if d <= st.ds]
    keep = set(days[cfg.publish_every - 1 :: cfg.publish_every]) | {st.ds}
    for part in ("valid", "test"):
        first = st.split[part][0]
        before = [d for d in days if d < first]
        if before:
            keep.add(before[-1])
    return sorted(keep)


def step_extract_aggregate(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    """Extract every day up to ``ds`` (one Ray Data job), then, day by day, gate and publish
    the snapshots (the CR aggregation is incremental: each continues the previous state).

    A day failing its quality gates raises :class:`GateFailed` before anything of it is
    published: earlier days' tables (and the index built from them) stay current.
    """
    from engines import get_spark
    from engines.fault_points import fault_point
    from extract import aggregate_day, already_published, extract_days
    from pipelines.gates import GateFailed, check_day, read_health

    extract_cfg = cfg.extract.model_copy(
        update={"force": force or cfg.extract.force, "ray_address": cfg.extract.ray_address or cfg.ray_address}
    )
    agg_cfg = cfg.aggregate.model_copy(update={"force": force or cfg.aggregate.force})
    targets = publish_days(cfg, st)
    days = [d for d in st.days if d <= st.ds]
    from extract.aggregate import daily_layer, published_layer

    # the layer the probe chose (manifest) unless the config pins one; days published at
    # another layer (the probe ran after them) are republished at this one
    layer = daily_layer(st.manifest, extract_cfg.layers, agg_cfg.layer)
    stale = (
        set()
        if agg_cfg.force
        else {d for d in targets if published_layer(layout.table("user_cr"), d) not in (None, layer)}
    )
    from pipelines.preflight import check_log_files

    clock = {"extract": 0.0, "gate": 0.0, "aggregate_publish": 0.0}
    st.substeps = clock
    t0 = time.perf_counter()
    check_log_files(layout.log, days)  # a truncated/replaced log file: named here, not deep in a Ray task
    pending = [
        d
        for d in targets
        if agg_cfg.force
        or d in stale
        or not all(
            already_published(layout.table(n), n, st.manifest.model_version, d)
            for n in ("user_ur", "item_ir", "user_cr", "item_cr")
        )
    ]
    # Spark only when a day is still to be published, and launched before extraction may
    # start Ray in this process (a JVM launched while a Ray driver is up hung or crashed
    # Ray's GCS client: docs/pipelines.md); already up when pretraining ran here.
    from pipelines import signals

    with signals.deferred():  # a JVM launch cut in half outlives this process
        spark = get_spark(cfg.spark_master or cfg.aggregate.spark_master) if pending else None
    extract_days(st.checkpoint, layout.log, days, {d: layout.samples(d) for d in days}, extract_cfg)
    fault_point("extract:after-samples")
    clock["extract"] = round(time.perf_counter() - t0, 2)
    from engines.progress import report_progress

    previous = None
    for d in days:
        t0 = time.perf_counter()
        health = read_health(layout.samples(d))
        reasons = check_day(d, health, previous, cfg.gates)
        clock["gate"] = round(clock["gate"] + time.perf_counter() - t0, 3)
        if reasons:
            raise GateFailed(d, reasons)
        previous = health
        if d not in targets:
            continue
        if d not in pending:  # published by an earlier (maybe killed) run
            st.published[d] = {n: -1 for n in ("user_ur", "item_ir", "user_cr", "item_cr")}
            continue
        t0 = time.perf_counter()
        day_cfg = agg_cfg.model_copy(update={"force": True}) if d in stale else agg_cfg
        st.published[d] = aggregate_day(layout.samples(d), layout.root / "tables", d, st.manifest, day_cfg, spark)
        clock["aggregate_publish"] = round(clock["aggregate_publish"] + time.perf_counter() - t0, 2)
        report_progress("aggregate.days", sum(x in st.published for x in pending), len(pending), ds=d)
