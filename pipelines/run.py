"""The chain for one ``ds``: ingest -> pretrain -> extract -> aggregate -> downstream ->
retrieval -> report. Each step is a function of (config, layout, state) that records its
outputs in ``state`` and is safe to rerun: finished work is recognised and skipped.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contracts import CheckpointManifest, RunLayout, config_hash
from contracts.checkpoint import MANIFEST_FILE
from contracts.dataset import IngestReport
from pipelines.config import RunConfig
from pipelines.gates import GateFailed
from pipelines.rollover import RolloverError

log = logging.getLogger("lfm4ads")


@dataclass
class RunState:
    """What the steps of one run hand each other (and the report reads)."""

    ds: str = ""
    days: list[str] = field(default_factory=list)
    split: dict[str, list[str]] = field(default_factory=dict)
    checkpoint: Path | None = None
    manifest: CheckpointManifest | None = None
    published: dict[str, dict[str, int]] = field(default_factory=dict)  # ds -> table -> version
    rollover: dict = field(default_factory=dict)
    downstream: dict | None = None
    index: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # steps restored from the ledger (timing 0.0)
    # seconds inside the extract step: extract (Ray Data), gate, aggregate+publish (Spark -> Delta)
    substeps: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    ingest: IngestReport | None = None  # what the ingest step committed (None: a fixed source, reused)


def register_source_store(cfg: RunConfig) -> None:
    """A source in an object store reads with the run's ``storage.options`` (endpoint,
    region), as the published tables do; credentials still come from the environment."""
    path = getattr(cfg.source, "path", None)
    if isinstance(path, str) and "://" in path and cfg.storage.options:
        from engines import storage

        storage.register(path, cfg.storage.options)


def step_ingest(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    from datasources import last_ingest, log_days, materialize

    register_source_store(cfg)

    # a file source is ingested incrementally (new/changed days); --force rebuilds it. Generated
    # and MovieLens logs are fixed: reused as they are.
    materialize(cfg.source, layout.log, force=force and cfg.source.kind == "file")
    st.ingest = last_ingest(layout.log)
    st.days = log_days(layout.log)
    if not st.days:
        from contracts import InputError

        raise InputError(f"{layout.log}: the log has no rows")
    st.ds = cfg.ds or st.days[-1]
    if st.ds not in st.days:
        from contracts import ConfigError

        raise ConfigError(f"ds: {st.ds} has no rows in the log ({st.days[0]}..{st.days[-1]})")
    st.split = cfg.split.resolve([d for d in st.days if d <= st.ds])


def _reusable_checkpoint(layout: RunLayout, cfg: RunConfig, train_days: list[str]) -> Path | None:
    """A finished checkpoint of this pretrain config on these days, if one exists."""
    want = config_hash(cfg.pretrain)
    if not layout.checkpoints.is_dir():
        return None
    for folder in sorted(layout.checkpoints.iterdir(), reverse=True):
        if folder.name.startswith((".", "_")):  # a temp folder of a killed save, or training runs
            continue
        mf = folder / MANIFEST_FILE
        if not mf.is_file():
            continue
        m = CheckpointManifest.model_validate_json(mf.read_text())
        if m.config_hash == want and f"train={train_days[0]}..{train_days[-1]}" in m.data_version:
            return folder
    return None


def step_pretrain(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    from pretrain import load_checkpoint, train_foundation_model

    ckpt = None if force else _reusable_checkpoint(layout, cfg, st.split["train"])
    if ckpt is None:
        _, ckpt = train_foundation_model(
            cfg.pretrain, layout.log, layout.checkpoints, st.split["train"], st.split["valid"], cfg.ray_address
        )
    st.checkpoint = Path(ckpt)
    st.manifest = load_checkpoint(ckpt).manifest


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


def step_rollover(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    """During a model-version rollover, also publish this version's vectors aligned into the
    previous version's space (a no-op unless ``rollover.previous_model_version`` is set)."""
    from pipelines.rollover import rollover_days

    rcfg = cfg.rollover.model_copy(update={"force": force or cfg.rollover.force})
    # run alone (`lfm4ads stage rollover --ds D`), extract is not in the chain: align ds itself
    days = sorted(st.published) or [st.ds]
    st.rollover = rollover_days(layout.root / "tables", days, st.manifest.model_version, rcfg)


def step_downstream(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    from downstream import train_and_evaluate

    dcfg = cfg.downstream
    if dcfg.expect_model_version is None:
        dcfg = dcfg.model_copy(update={"expect_model_version": st.manifest.model_version})
    st.downstream = train_and_evaluate(
        layout.log, layout.root, dcfg, st.split["train"], st.split["valid"], st.split["test"]
    )


def step_retrieval(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    """Train the query tower, publish ``user_query``, build the paired index over item_ir and
    promote it only when the quality gate passes (retrieval/paired.py); a refused version is
    kept on disk, named in the report, and raises IndexPromotionRefused (exit 7)."""
    if cfg.retrieval.query_tower is None:  # index only, evaluated with query_table vectors
        from retrieval import run_retrieval

        manifest = run_retrieval(layout.root, st.ds, cfg.retrieval, expect_model_version=st.manifest.model_version)
        st.index = manifest.model_dump(mode="json")
        return
    from contracts import IndexPromotionRefused
    from retrieval import run_retrieval
    from retrieval.paired import TooLittleData, run_query_retrieval

    try:
        manifest = run_query_retrieval(
            layout.root, st.ds, st.split, cfg.retrieval, expect_model_version=st.manifest.model_version
        )
    except TooLittleData as e:  # a young log: serve the item index as before, and say why
        log.warning(
            "query tower skipped for ds=%s: %s; the index is built without it",
            st.ds,
            e,
            extra={"ds": st.ds, "step": "retrieval", "event": "query_tower_skipped"},
        )
        manifest = run_retrieval(layout.root, st.ds, cfg.retrieval, expect_model_version=st.manifest.model_version)
        st.index = {**manifest.model_dump(mode="json"), "query_tower_skipped": str(e)}
        return
    st.index = manifest.model_dump(mode="json")
    if manifest.quality is not None and not manifest.quality.promoted:
        msg = (
            f"index {manifest.version} built and kept in {layout.indexes / manifest.version} but not promoted: "
            f"{manifest.quality.refused}"
        )
        from pipelines.report import write_report

        st.report = write_report(cfg, layout, st, failure=msg, failed_step="retrieval")
        raise IndexPromotionRefused(msg)


def step_report(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    from pipelines.report import write_report

    st.report = write_report(cfg, layout, st)


STEPS: dict[str, Callable[..., None]] = {
    "ingest": step_ingest,
    "pretrain": step_pretrain,
    "extract": step_extract_aggregate,
    "rollover": step_rollover,
    "downstream": step_downstream,
    "retrieval": step_retrieval,
    "report": step_report,
}

# The config sections each step depends on (cumulative: a change upstream redoes it).
# A dotted key is one field, hashed only when set: where a step publishes to, so pointing a
# root at another store redoes the publishing steps, while runs without a store keep their hashes.
STEP_CONFIG = {
    "ingest": ["source"],
    "pretrain": ["split", "pretrain"],
    "extract": ["extract", "aggregate", "publish_every", "gates", "storage.tables_uri"],
    "rollover": ["rollover"],
    "downstream": ["downstream"],
    "retrieval": ["retrieval", "storage.index_uri"],
    "report": [],
}


def _step_hashes(cfg: RunConfig) -> dict[str, str]:
    import hashlib

    out, acc = {}, []
    dumped = cfg.model_dump(mode="json")
    for name, keys in STEP_CONFIG.items():
        for key in keys:
            section, _, field_ = key.partition(".")
            if not field_:
                acc.append(json.dumps(dumped[section], sort_keys=True))
            elif dumped[section][field_] is not None:
                acc.append(f"{key}={json.dumps(dumped[section][field_])}")
        out[name] = hashlib.sha256("|".join(acc).encode()).hexdigest()[:16]
    return out


def _outputs(name: str, st: RunState) -> dict:
    return {
        "ingest": lambda: {"ds": st.ds, "days": st.days, "split": st.split},
        "pretrain": lambda: {"checkpoint": str(st.checkpoint)},
        "extract": lambda: {"published": st.published},
        "rollover": lambda: {"rollover": st.rollover},
        "downstream": lambda: {"downstream": st.downstream},
        "retrieval": lambda: {"index": st.index},
        "report": lambda: {"report": str(st.report)},
    }[name]()


def _restore(name: str, st: RunState, out: dict) -> None:
    if name == "pretrain":
        from pretrain import load_checkpoint

        st.checkpoint = Path(out["checkpoint"])
        st.manifest = load_checkpoint(st.checkpoint).manifest
    elif name == "extract":
        st.published = out["published"]
    elif name == "rollover":
        st.rollover = out["rollover"]
    elif name == "downstream":
        st.downstream = out["downstream"]
    elif name == "retrieval":
        st.index = out["index"]


def _spark_before_training(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool) -> None:
    """Launch Spark now if pretraining is about to train (Ray Train starts Ray in this
    process) and extraction follows: a new model version publishes every target day, so
    Spark will be needed, and its JVM must not be launched while a Ray driver is up (it
    hung or crashed Ray's GCS client, docs/pipelines.md). A reused checkpoint starts no
    Ray, and the extract step then starts Spark itself, only if a day is left to publish."""
    if not force and _reusable_checkpoint(layout, cfg, st.split["train"]) is not None:
        return
    from engines import get_spark
    from pipelines import signals

    with signals.deferred():  # a JVM launch cut in half outlives this process
        get_spark(cfg.spark_master or cfg.aggregate.spark_master)


_STOPPED_BY = {
    "## RUN STOPPED BEFORE PUBLISHING": "extract",
    "## ROLLOVER REFUSED": "rollover",
    "## INDEX NOT PROMOTED": "retrieval",
}


def _refresh_stopped_report(cfg: RunConfig, layout: RunLayout, st: RunState, chain: list[str]) -> None:
    """A day's report written when a gate, the rollover or the index promotion stopped it
    says so; once a later run of that day gets through the step that stopped (without the
    report step, e.g. ``lfm4ads experiment`` or ``stage extract``), rewrite it."""
    path = layout.report(st.ds) / "report.md" if st.ds else None
    if path is None or not path.is_file():
        return
    text = path.read_text()
    if any(header in text and step in chain for header, step in _STOPPED_BY.items()):
        from pipelines.report import write_report

        st.report = write_report(cfg, layout, st)


def run_pipeline(
    cfg: RunConfig,
    steps: list[str] | None = None,
    force: bool = False,
    on_step: Callable[[str, float], None] | None = None,
    wait: bool = False,
    on_start: Callable[[str, list[str]], None] | None = None,
    on_reuse: Callable[[str], None] | None = None,
) -> RunState:
    """Run ``steps`` (default: all, in order) for ``cfg.ds`` under the run root's lock.

    Every step is recorded in the ledger (``root/ledger.sqlite``); a step finished with
    the same config is skipped (its outputs restored) unless ``force``, so a killed run
    resumes at its first unfinished step. Steps the asked-for ones depend on (ingest,
    pretrain) are reused or run. ``on_start(step, chain)`` is called before each step
    (``chain``: the steps this call runs, in order), ``on_step(step, seconds)`` after it
    (seconds 0.0 for a step reused from the ledger; ``on_reuse(step)`` instead, when given).

    SIGINT / SIGTERM stop the running step within seconds (pipelines.signals): it is marked
    ``interrupted`` in the ledger and :class:`pipelines.signals.Interrupted` propagates.
    """
    from pipelines import signals

    with signals.handling():
        return _run_chain(cfg, steps, force, on_step, wait, on_start, on_reuse)


def _run_chain(cfg, steps, force, on_step, wait, on_start, on_reuse) -> RunState:
    from contracts import ConfigError
    from pipelines import signals
    from pipelines.ledger import Ledger
    from pipelines.lock import ds_lock

    layout = RunLayout(cfg.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    from engines.storage import mount_run

    mount_run(cfg.storage, layout.root)  # root/tables, root/indexes -> storage URIs (no-op when unset)
    wanted = steps or list(STEPS)
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown}; steps are {list(STEPS)}")
    order = list(STEPS)
    last = max(order.index(s) for s in wanted)
    needed = {"ingest"} | ({"pretrain"} if last >= order.index("pretrain") else set())
    hashes = _step_hashes(cfg)
    ledger = Ledger(layout.root / "ledger.sqlite")
    st = RunState()
    # One run per root at a time: days of one root share incremental state (CR tables).
    with ds_lock(layout.root, "run", wait=wait):
        # Engines start lazily, inside the step that needs them: a run resumed after
        # extraction starts neither Spark nor Ray (see _spark_before_training for the order).
        chain = [n for n in order[: last + 1] if n in wanted or n in needed]
        for name in chain:
            if on_start:
                on_start(name, chain)
            redo = force and name in wanted
            t0 = time.perf_counter()
            if name != "ingest" and name != "report" and not redo:
                prev = ledger.done(st.ds, name, hashes[name])
                if prev is not None:
                    _restore(name, st, prev)
                    st.timings[name] = 0.0
                    st.reused.append(name)
                    log.info(
                        "step %s already done for ds=%s: reused",
                        name,
                        st.ds,
                        extra={"ds": st.ds, "step": name, "event": "reused"},
                    )
                    if on_reuse:
                        on_reuse(name)
                    elif on_step:
                        on_step(name, 0.0)
                    continue
            if name != "ingest":
                ledger.start(
                    st.ds,
                    name,
                    hashes[name],
                    {"config_hash": hashes[name], "split": st.split, "checkpoint": str(st.checkpoint)},
                )
            try:
                signals.check()  # a signal between two steps stops before the next one starts
                signals.pause_point(name)
                if name == "pretrain" and "extract" in chain:
                    _spark_before_training(cfg, layout, st, redo)
                if name == "report":  # `stage report` alone: the day's finished steps still report
                    for earlier in ("extract", "rollover", "downstream", "retrieval"):
                        row = None if earlier in chain else ledger.get(st.ds, earlier)
                        if row and row["status"] == "done" and row["outputs"]:
                            _restore(earlier, st, row["outputs"])
                STEPS[name](cfg, layout, st, force=redo)
            except KeyboardInterrupt as e:  # SIGINT / SIGTERM (signals.Interrupted) or Ctrl-C
                how = signal.Signals(getattr(e, "signum", signals.received() or signal.SIGINT)).name
                day = st.ds or cfg.ds or "latest"  # ingest stopped before it read the log's last day
                if name == "ingest":
                    ledger.start(day, name, hashes[name], {"source": cfg.source.model_dump(mode="json")})
                ledger.interrupt(day, name, how)
                log.error(
                    "step %s interrupted by %s for ds=%s; nothing of it was published",
                    name,
                    how,
                    st.ds,
                    extra={"ds": st.ds, "step": name, "event": "interrupted", "signal": how},
                )
                raise
            except BaseException as e:
                if name != "ingest":
                    ledger.fail(st.ds, name, f"{type(e).__name__}: {e}")
                log.error(
                    "step %s failed for ds=%s: %s: %s",
                    name,
                    st.ds,
                    type(e).__name__,
                    e,
                    extra={"ds": st.ds, "step": name, "event": "failed", "error": type(e).__name__},
                )
                if isinstance(e, (GateFailed, RolloverError)):
                    from pipelines.report import write_report

                    st.report = write_report(cfg, layout, st, failure=str(e), failed_step=name)
                raise
            st.timings[name] = round(time.perf_counter() - t0, 2)
            if name == "ingest":
                ledger.start(st.ds, name, hashes[name], {"source": cfg.source.model_dump(mode="json")})
            ledger.finish(st.ds, name, _outputs(name, st))
            log.info(
                "step %s done in %.1fs",
                name,
                st.timings[name],
                extra={
                    "ds": st.ds,
                    "step": name,
                    "event": "done",
                    "seconds": st.timings[name],
                    **({"substeps": st.substeps} if name == "extract" else {}),
                },
            )
            if on_step:
                on_step(name, st.timings[name])
        if "report" not in chain:
            _refresh_stopped_report(cfg, layout, st, chain)
    summary = {"ds": st.ds, "timings": st.timings, "report": str(st.report) if st.report else None}
    (layout.root / "last_run.json").write_text(json.dumps(summary, indent=2))
    return st
