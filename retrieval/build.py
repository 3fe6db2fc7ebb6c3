"""``build_index``: one day of an item table -> a new, evaluated, live index version."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from contracts import IndexManifest
from engines import storage
from engines.fault_points import fault_point
from retrieval import evaluate, faiss_index, store
from retrieval.config import RetrievalConfig
from retrieval.source import SourceError, check_vectors, read_snapshot

log = logging.getLogger(__name__)


class RecallBelowTarget(RuntimeError):
    """The built index misses the recall target; it was not published. ``manifest`` holds the numbers."""

    def __init__(self, message: str, manifest: IndexManifest):
        super().__init__(message)
        self.manifest = manifest


def sample_queries(vectors: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """Item vectors plus Gaussian noise (std = ``noise`` x the vectors' per-dim std): (n, d)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(vectors.shape[0], n, replace=vectors.shape[0] < n)
    scale = noise * vectors.std(axis=0, keepdims=True)
    return (vectors[rows] + rng.standard_normal((n, vectors.shape[1])).astype(np.float32) * scale).astype(np.float32)


def prepare_queries(queries: np.ndarray | None, vectors: np.ndarray, cfg: RetrievalConfig) -> np.ndarray:
    """Validated evaluation queries (at most ``cfg.eval_queries``), normalised for cosine."""
    dim = vectors.shape[1]
    if queries is None:
        q = sample_queries(vectors, cfg.eval_queries, cfg.query_noise, cfg.seed)
    else:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != dim:
            raise SourceError(f"evaluation queries: dimension mismatch, shape {q.shape}, items have dim {dim}")
        if q.shape[0] < 2:
            raise SourceError(f"evaluation queries: need at least 2, got {q.shape[0]}")
        check_vectors(
            np.arange(len(q)).astype(str).astype(object), q, "evaluation queries", cosine=cfg.metric == "cosine"
        )
        # A random subset in random order: user tables are often sorted, and the halves
        # (tune / evaluate) must come from the same distribution.
        rng = np.random.default_rng(cfg.seed)
        q = q[rng.permutation(q.shape[0])[: cfg.eval_queries]]
    return faiss_index.normalise(q) if cfg.metric == "cosine" else np.ascontiguousarray(q)


def build_index(
    table_path: str | Path,
    ds: str,
    index_root: str | Path,
    cfg: RetrievalConfig | None = None,
    queries: np.ndarray | None = None,
    future: tuple[np.ndarray, list[list[str]]] | None = None,
    *,
    expect_model_version: str | None = None,
    decide: "Callable[[IndexManifest], IndexManifest] | None" = None,
    augment: "Callable[[np.ndarray, np.ndarray], np.ndarray] | None" = None,
) -> IndexManifest:
    """Build, evaluate and publish an index over partition ``ds`` of ``table_path``.

    queries: (nq, dim) user vectors used for tuning (first half) and recall (second half);
    None = sampled item vectors plus noise. future: optional (user vectors (nu, dim),
    items each user interacted with after ``ds``) for hit-rate@K in the manifest.
    expect_model_version: refuse a partition written by another model version.
    augment: ``(ids, vectors (n, d)) -> (n, d')``: the vectors actually indexed (e.g. IR plus
    the query tower's popularity column); the manifest's ``dim`` is ``d'``.
    decide: called with the measured manifest once the ANN-recall gate passed; returns it
    completed (e.g. with ``quality``). When its ``quality.promoted`` is False the version
    folder is still written (kept, prunable like any other) but CURRENT is not switched.
    Raises :class:`SourceError` for bad input and :class:`RecallBelowTarget` when the
    index misses ``cfg.recall_target``; in both cases (and any other failure) CURRENT
    and the published versions are untouched.
    """
    cfg = cfg or RetrievalConfig()
    root = Path(index_root)
    t0 = time.perf_counter()
    cosine = cfg.metric == "cosine"
    snap = read_snapshot(table_path, ds, cosine=cosine)
    if expect_model_version is not None and snap.model_version != expect_model_version:
        raise SourceError(
            f"{table_path} ds={ds}: model_version is {snap.model_version!r}, expected {expect_model_version!r}"
        )
    vectors = faiss_index.normalise(snap.vectors) if cosine else snap.vectors
    if augment is not None:
        vectors = np.ascontiguousarray(augment(snap.ids, vectors), dtype=np.float32)
    dim = vectors.shape[1]
    q = prepare_queries(queries, vectors, cfg)
    if future is not None:
        fut_vecs = np.asarray(future[0], dtype=np.float32)
        if fut_vecs.ndim != 2 or fut_vecs.shape[1] != dim:
            raise SourceError(f"hit-rate users: dimension mismatch, shape {fut_vecs.shape}, items have dim {dim}")

    n = len(snap.ids)
    factory = cfg.factory or faiss_index.auto_factory(n, dim, cfg.flat_max_items)
    tb = time.perf_counter()
    index = faiss_index.build(factory, vectors, cfg.train_sample, cfg.seed, cfg.use_gpu)
    build_s = time.perf_counter() - tb

    kmax = min(max(cfg.k_values), n)
    k_values = sorted({min(k, n) for k in cfg.k_values})
    _, truth = evaluate.exact_topk(vectors, q, kmax, cfg.use_gpu)
    half = len(q) // 2
    params, points = evaluate.tune(
        index, q[:half], truth[:half], k_values, min(1.0, cfg.recall_target + cfg.tune_margin)
    )
    log.info("tuned %s: %s after %d point(s)", factory, params, len(points))
    rows, secs = evaluate.timed_search(index, q[half:], kmax)
    recall = {str(k): round(evaluate.recall_at_k(rows, truth[half:], min(k, n)), 6) for k in cfg.k_values}

    version = store.new_version(ds)
    manifest_params: dict[str, float | int | str] = dict(params)
    manifest_params.update(
        build_s=round(build_s, 3),
        total_s=round(time.perf_counter() - t0, 3),
        eval_queries=len(q) - half,
        tune_queries=half,
        query_source="given" if queries is not None else "sampled_items",
        qps=round((len(q) - half) / secs, 1),
        recall_target=cfg.recall_target,
        source_path=storage.locate(table_path)[0],  # the store URI when the table lives there
    )
    manifest = IndexManifest(
        version=version,
        created_at=datetime.now(timezone.utc),
        source_table=cfg.source_table,
        source_table_version=snap.table_version,
        ds=ds,
        model_version=snap.model_version,
        metric=cfg.metric,
        factory=factory,
        params=manifest_params,
        num_items=n,
        dim=dim,
        recall_at_k=recall,
    )
    if future is not None:
        manifest = manifest.model_copy(update={"hit_rate_at_k": _hit_rate(index, snap.ids, future, cfg)})
    worst = min(recall.values())
    if worst < cfg.recall_target:
        raise RecallBelowTarget(
            f"{factory} over {n} items reaches recall {recall} (best tuning {params}), below target "
            f"{cfg.recall_target}: not published, CURRENT still {store.read_current(root)!r}",
            manifest,
        )

    if decide is not None:
        manifest = decide(manifest)
    live = manifest.quality is None or manifest.quality.promoted
    tmp = store.temp_dir(root)
    try:
        size = store.write_index_file(tmp, index)
        manifest = manifest.model_copy(update={"params": {**manifest.params, "bytes_per_item": round(size / n, 1)}})
        store.write_meta(tmp, snap.ids, manifest)
        store.publish(tmp, root, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not live:
        log.warning("index %s kept but not promoted: %s", version, manifest.quality.refused)
        return manifest
    fault_point("retrieval:before-current")
    store.set_current(root, version)
    gone = store.prune(root, cfg.keep_versions)
    log.info("index %s live (%s, recall %s); pruned %s", version, factory, recall, gone)
    return manifest


def _hit_rate(index, ids: np.ndarray, future, cfg: RetrievalConfig) -> dict[str, float]:
    users = np.asarray(future[0], dtype=np.float32)
    if cfg.metric == "cosine":
        users = faiss_index.normalise(users)
    _, rows = index.search(np.ascontiguousarray(users), min(max(cfg.k_values), len(ids)))
    found = np.where(rows >= 0, ids[np.clip(rows, 0, None)], None)
    return evaluate.hit_rate_at_k(found, future[1], cfg.k_values)
