"""The steps of the chain for one ``ds``: ingest -> pretrain -> extract -> rollover -> downstream
-> retrieval -> report (:data:`STEPS`, in order). Each step is a function of (config, layout,
state) that records its outputs in ``state`` and is safe to rerun: finished work is recognised
and skipped. The extract step lives in pipelines/step_extract.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from contracts import CheckpointManifest, RunLayout, config_hash
from contracts.checkpoint import MANIFEST_FILE
from pipelines.config import RunConfig
from pipelines.state import RunState
from pipelines.step_extract import step_extract_aggregate

log = logging.getLogger("lfm4ads")


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


def reusable_checkpoint(layout: RunLayout, cfg: RunConfig, train_days: list[str]) -> Path | None:
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
        if m.config_hash != want:
            continue
        if m.train_days == train_days:
            return folder
        # a manifest written before train_days existed: its day range is in data_version's text
        if not m.train_days and f"train={train_days[0]}..{train_days[-1]}" in m.data_version:
            return folder
    return None


def step_pretrain(cfg: RunConfig, layout: RunLayout, st: RunState, force: bool = False) -> None:
    from pretrain import load_checkpoint, train_foundation_model

    ckpt = None if force else reusable_checkpoint(layout, cfg, st.split["train"])
    if ckpt is None:
        _, ckpt = train_foundation_model(
            cfg.pretrain, layout.log, layout.checkpoints, st.split["train"], st.split["valid"], cfg.ray_address
        )
    st.checkpoint = Path(ckpt)
    st.manifest = load_checkpoint(ckpt).manifest


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
