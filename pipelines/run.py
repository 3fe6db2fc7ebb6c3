"""The chain for one ``ds``: :func:`run_pipeline` runs the steps (pipelines/steps.py) in order
under the run root's lock, records each in the ledger and reuses the finished ones
(pipelines/step_records.py), and starts Spark before Ray where both are needed.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from typing import Callable

from contracts import RunLayout
from engines.fault_points import fault_point
from pipelines.config import RunConfig
from pipelines.gates import GateFailed
from pipelines.rollover import RolloverError
from pipelines.state import RunState
from pipelines.step_records import restore_step, step_hashes, step_outputs
from pipelines.steps import STEPS, reusable_checkpoint

log = logging.getLogger("lfm4ads")


def _spark_before_training(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool) -> None:
    """Launch Spark now if pretraining is about to train (Ray Train starts Ray in this
    process) and extraction follows: a new model version publishes every target day, so
    Spark will be needed, and its JVM must not be launched while a Ray driver is up (it
    hung or crashed Ray's GCS client, docs/pipelines.md). A reused checkpoint starts no
    Ray, and the extract step then starts Spark itself, only if a day is left to publish."""
    if not force and reusable_checkpoint(layout, cfg, st.split["train"]) is not None:
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
    hashes = step_hashes(cfg)
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
                    restore_step(name, st, prev)
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
                            restore_step(earlier, st, row["outputs"])
                fault_point(f"before:{name}")
                STEPS[name](cfg, layout, st, force=redo)
                fault_point(f"after:{name}")
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
            ledger.finish(st.ds, name, step_outputs(name, st))
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
