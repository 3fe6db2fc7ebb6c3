"""``run_retrieval``: the ``lfm4ads retrieval`` step over a run root (paths from ``RunLayout``)."""

from __future__ import annotations

import logging
from pathlib import Path

from contracts import IndexManifest, RunLayout, TableProperties
from engines import delta_io
from retrieval.build import build_index
from retrieval.config import RetrievalConfig
from retrieval.holdout import future_positives
from retrieval.source import SourceError, read_snapshot

log = logging.getLogger(__name__)


def run_retrieval(
    run_root: str | Path, ds: str, cfg: RetrievalConfig | None = None, *, expect_model_version: str | None = None
) -> IndexManifest:
    """Index ``tables/<cfg.source_table>`` at ``ds`` into ``indexes/``.

    Evaluation queries are the vectors of ``tables/<cfg.query_table>`` (newest day <= ``ds``)
    when that table exists; sampled item vectors otherwise. When the log (``log/``) has days
    after ``ds``, those users' later positives give hit-rate@K in the manifest.
    """
    cfg = cfg or RetrievalConfig()
    layout = RunLayout(run_root)
    queries = None
    future = None
    if cfg.query_table is not None:
        qpath = layout.table(cfg.query_table)
        days = [d for d in delta_io.list_days(qpath) if d <= ds]
        if days:
            snap = read_snapshot(qpath, days[-1], cosine=cfg.metric == "cosine")
            item_dim = TableProperties.from_delta(delta_io.table_configuration(layout.table(cfg.source_table))).dim
            if snap.dim != item_dim:
                raise SourceError(
                    f"{qpath}: user vectors have dim {snap.dim} but {cfg.source_table} has dim {item_dim}; "
                    f"pair user_ur with item_ir and user_cr with item_cr, or set query_table: null"
                )
            future = _future(layout, ds, cfg, snap)
            if len(snap.ids) >= 20:
                queries = snap.vectors
            else:
                log.warning("%s ds=%s: only %d users; sampling item queries instead", qpath, days[-1], len(snap.ids))
        else:
            log.warning("%s: no day <= %s; sampling item queries instead", qpath, ds)
    return build_index(
        layout.table(cfg.source_table),
        ds,
        layout.indexes,
        cfg,
        queries=queries,
        future=future,
        expect_model_version=expect_model_version,
    )


def _future(layout: RunLayout, ds: str, cfg: RetrievalConfig, users) -> tuple | None:
    """(user vectors, their later positive items) for users of the query table, or None."""
    if cfg.hit_rate_days == 0 or not delta_io.exists(layout.log):
        return None
    pos = future_positives(layout.log, ds, cfg.hit_rate_days, cfg.hit_rate_task)
    rows = [i for i, u in enumerate(users.ids.tolist()) if u in pos]
    if not rows:
        log.info("no later positives for users of %s: hit-rate skipped", cfg.query_table)
        return None
    return users.vectors[rows], [pos[u] for u in users.ids[rows].tolist()]
