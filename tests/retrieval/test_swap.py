"""Versioned folders, the atomic CURRENT pointer, pruning, and failures that leave CURRENT alone."""

from __future__ import annotations

import os

import numpy as np
import pytest

from retrieval import RecallBelowTarget, RetrievalConfig, SourceError, build_index, load_current, store
from tests.retrieval.helpers import clustered, make_table

DS = "2026-01-02"
CFG = RetrievalConfig(k_values=[5], eval_queries=40, keep_versions=2)


def _table(tmp_path, n=200, d=8, seed=0):
    make_table(tmp_path / "item_ir", [f"i{j}" for j in range(n)], clustered(n, d, seed=seed))
    return tmp_path / "item_ir"


def _state(root):
    return store.read_current(root), store.list_versions(root), sorted(os.listdir(root))


def test_versions_swap_and_prune(tmp_path):
    table, root = _table(tmp_path), tmp_path / "idx"
    made = [build_index(table, DS, root, CFG).version for _ in range(4)]
    assert made == sorted(made)  # names sort in build order
    assert store.read_current(root) == made[-1]
    assert store.list_versions(root) == made[-2:]  # keep_versions=2
    assert sorted(os.listdir(root)) == sorted(["CURRENT", *made[-2:]])  # no temp leftovers
    assert load_current(root).version == made[-1]


def test_prune_never_deletes_live_version(tmp_path):
    table, root = _table(tmp_path), tmp_path / "idx"
    v = [build_index(table, DS, root, CFG).version for _ in range(3)]
    store.set_current(root, v[1])  # operator rolled back
    store.prune(root, keep=1)
    assert store.list_versions(root) == [v[1], v[2]]
    assert load_current(root).version == v[1]


def test_failing_builds_leave_current_untouched(tmp_path, monkeypatch):
    table, root = _table(tmp_path), tmp_path / "idx"
    live = build_index(table, DS, root, CFG).version
    before = _state(root)

    # Bad input: a day that does not exist.
    with pytest.raises(SourceError, match="no such partition"):
        build_index(table, "2030-01-01", root, CFG)
    # Below the recall target: coarse PQ without re-ranking cannot reach 0.999.
    with pytest.raises(RecallBelowTarget, match="below target") as e:
        build_index(table, DS, root, CFG.model_copy(update={"factory": "IVF4,PQ2x4", "recall_target": 0.999}))
    assert e.value.manifest.recall_at_k["5"] < 0.999

    # A crash while writing the version folder.
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_meta", boom)
    with pytest.raises(OSError, match="disk full"):
        build_index(table, DS, root, CFG)
    monkeypatch.undo()
    # An invalid factory override.
    with pytest.raises(ValueError, match="invalid FAISS factory"):
        build_index(table, DS, root, CFG.model_copy(update={"factory": "NotAnIndex42"}))

    assert _state(root) == before
    assert load_current(root).version == live


def test_set_current_refuses_incomplete_version(tmp_path):
    table, root = _table(tmp_path), tmp_path / "idx"
    live = build_index(table, DS, root, CFG).version
    (root / "v-half").mkdir()
    with pytest.raises(store.IndexLoadError, match="not a complete index version"):
        store.set_current(root, "v-half")
    assert store.read_current(root) == live


def test_load_current_errors(tmp_path):
    root = tmp_path / "idx"
    with pytest.raises(store.IndexLoadError, match="no index published yet"):
        load_current(root)
    table = _table(tmp_path)
    m = build_index(table, DS, root, CFG)
    # Corrupt the live index file in place: a clear error, naming the file.
    path = root / m.version / "index.faiss"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.IndexLoadError, match="corrupted or unreadable FAISS index"):
        load_current(root)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(store.IndexLoadError, match="index.faiss"):
        load_current(root)
    # CURRENT naming a folder that is gone.
    (root / "CURRENT").write_text("v-missing\n")
    with pytest.raises(store.IndexLoadError, match="does not exist"):
        load_current(root)


def test_search_rejects_bad_queries(tmp_path):
    from retrieval import search

    root = tmp_path / "idx"
    build_index(_table(tmp_path), DS, root, CFG)
    loaded = load_current(root)
    with pytest.raises(ValueError, match="dimension mismatch"):
        search(loaded, np.zeros((2, 9), np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        search(loaded, np.full((1, 8), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="positive integer"):
        search(loaded, np.zeros((1, 8), np.float32), 0)
    ids, scores = search(loaded, np.ones((1, 8), np.float32), 250)  # more than the 200 items
    assert ids[0, 199] is not None and ids[0, 200] is None and scores[0, 200] == -np.inf
