"""Versioned index folders under an index root and the atomic ``CURRENT`` pointer.

Layout::

    index_root/CURRENT                 one line: the live version's folder name
    index_root/<version>/index.faiss   plain faiss.read_index
    index_root/<version>/ids.parquet   row -> item id (column ``entity_id``)
    index_root/<version>/manifest.json IndexManifest

A version folder appears by ``rename`` of a complete temp folder, and ``CURRENT`` changes
by ``os.replace`` of a complete temp file, so a reader sees either the old or the new
index, never a mix. Version names start with a UTC timestamp: name order = build order.

Object store (``storage.index_uri``, an ``index_root`` under a mount of
:mod:`engines.storage`): the build still happens in the local folder above; then
:func:`set_current` uploads the version's files (``manifest.json`` last) under
``<index_uri>/<version>/`` and switches the ``<index_uri>/CURRENT`` object with one PUT
(atomic on S3: a reader gets the old or the new text, never a mix), and only then
the local ``CURRENT``. Readers (:func:`read_current`, :func:`load_current`, also given
the URI itself) resolve the store's ``CURRENT`` and load that version from the local
build folder when it is there, else from a download cache (versions never change).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts import IndexManifest
from contracts.index import IDS_FILE, INDEX_FILE, INDEX_MANIFEST_FILE
from engines import storage
from retrieval import faiss_index

CURRENT = "CURRENT"
TMP_PREFIX = ".tmp-"


class IndexLoadError(RuntimeError):
    """The live index (or the CURRENT pointer) cannot be read; the message names the file."""


@dataclass(frozen=True)
class LoadedIndex:
    """An index ready to search. ids: (ntotal,) object array of str (row -> item id)."""

    index: faiss.Index
    ids: np.ndarray
    manifest: IndexManifest
    path: Path

    @property
    def version(self) -> str:
        return self.manifest.version


def new_version(ds: str) -> str:
    now = datetime.now(timezone.utc)
    return f"v{now:%Y%m%dT%H%M%S%f}-ds{ds}-{uuid.uuid4().hex[:6]}"


def temp_dir(index_root: Path) -> Path:
    index_root.mkdir(parents=True, exist_ok=True)
    d = index_root / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    d.mkdir()
    return d


def write_index_file(tmp: Path, index: faiss.Index) -> int:
    """Write ``index.faiss`` into the temp folder; returns its size in bytes."""
    faiss.write_index(index, str(tmp / INDEX_FILE))
    _fsync(tmp / INDEX_FILE)
    return (tmp / INDEX_FILE).stat().st_size


def write_meta(tmp: Path, ids: np.ndarray, manifest: IndexManifest) -> None:
    """Write ``ids.parquet`` and ``manifest.json`` into the temp folder (fsynced)."""
    pq.write_table(pa.table({"entity_id": pa.array(ids.tolist(), pa.string())}), tmp / IDS_FILE)
    (tmp / INDEX_MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    for name in (IDS_FILE, INDEX_MANIFEST_FILE):
        _fsync(tmp / name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, index_root: Path, version: str) -> Path:
    final = index_root / version
    os.rename(tmp, final)
    return final


VERSION_FILES = (INDEX_FILE, IDS_FILE, INDEX_MANIFEST_FILE)  # upload order: the manifest completes a version


def read_current(index_root: str | Path) -> str | None:
    """The live version name, or None when nothing was published yet (in the object store
    when ``index_root`` is a URI or mounted on one)."""
    if storage.is_remote(index_root):
        uri, opts = storage.locate(index_root)
        text = storage.get_text(f"{uri}/{CURRENT}", opts)
        return (text or "").strip() or None
    p = Path(index_root) / CURRENT
    try:
        name = p.read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def set_current(index_root: str | Path, version: str) -> None:
    """Point CURRENT at ``version`` atomically (temp file + fsync + ``os.replace``).

    Mounted on an object store: upload the version first, then PUT the store's CURRENT,
    then switch the local one; a failed upload leaves both pointers where they were."""
    if storage.is_uri(index_root):
        raise ValueError(f"{index_root}: build into a local index root mounted on the store, not the URI itself")
    root = Path(index_root)
    if not (root / version / INDEX_MANIFEST_FILE).is_file():
        raise IndexLoadError(f"{root / version}: not a complete index version")
    if storage.is_remote(root):
        uri, opts = storage.locate(root)
        for name in VERSION_FILES:
            storage.upload(root / version / name, f"{uri}/{version}/{name}", opts)
        storage.put_text(f"{uri}/{CURRENT}", version + "\n", opts)
    tmp = root / f"{TMP_PREFIX}{CURRENT}-{uuid.uuid4().hex}"
    with open(tmp, "w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / CURRENT)


def list_versions(index_root: str | Path) -> list[str]:
    """Published version folders, oldest first."""
    root = Path(index_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))


def prune(index_root: str | Path, keep: int, stale_tmp_s: float = 3600.0) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the live one) and temp leftovers
    of crashed builds older than ``stale_tmp_s``. Returns the deleted version names."""
    root = Path(index_root)
    live = read_current(root)
    versions = list_versions(root)
    keep_set = set(versions[-keep:]) | ({live} if live else set())
    gone = []
    remote = storage.locate(root) if storage.is_remote(root) else None
    for v in versions:
        if v not in keep_set:
            if remote:  # the store's copy first: a version is never in the store without its build
                storage.delete_dir(f"{remote[0]}/{v}", remote[1])
            shutil.rmtree(root / v, ignore_errors=True)
            gone.append(v)
    now = time.time()
    for p in root.glob(f"{TMP_PREFIX}*"):
        try:
            if now - p.stat().st_mtime > stale_tmp_s:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except FileNotFoundError:
            pass
    return gone


def load_version(folder: str | Path, use_gpu: bool = False) -> LoadedIndex:
    """Open one version folder; every inconsistency is an :class:`IndexLoadError`."""
    folder = Path(folder)
    mpath = folder / INDEX_MANIFEST_FILE
    try:
        manifest = IndexManifest.model_validate(json.loads(mpath.read_text()))
    except FileNotFoundError:
        raise IndexLoadError(f"{mpath}: missing") from None
    except Exception as e:  # noqa: BLE001 - JSON or schema errors alike
        raise IndexLoadError(f"{mpath}: unreadable manifest: {e}") from None
    ipath = folder / INDEX_FILE
    try:
        index = faiss.read_index(str(ipath))
    except Exception as e:  # noqa: BLE001 - faiss raises RuntimeError with C++ details
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise IndexLoadError(f"{ipath}: corrupted or unreadable FAISS index ({detail})") from None
    try:
        ids = np.asarray(pq.read_table(folder / IDS_FILE).column("entity_id").to_pylist(), dtype=object)
    except Exception as e:  # noqa: BLE001
        raise IndexLoadError(f"{folder / IDS_FILE}: unreadable id map: {e}") from None
    if index.ntotal != len(ids) or index.ntotal != manifest.num_items or index.d != manifest.dim:
        raise IndexLoadError(
            f"{folder}: inconsistent version: index has {index.ntotal} x {index.d}, "
            f"ids {len(ids)}, manifest {manifest.num_items} x {manifest.dim}"
        )
    faiss_index.set_params(index, manifest.params)
    index = faiss_index.maybe_gpu(index, use_gpu)
    return LoadedIndex(index=index, ids=ids, manifest=manifest, path=folder)


def load_current(index_root: str | Path, use_gpu: bool = False) -> LoadedIndex:
    """The live index. A version pruned between reading CURRENT and opening it is retried."""
    if storage.is_remote(index_root):
        return _load_current_remote(index_root, use_gpu)
    root = Path(index_root)
    for attempt in range(3):
        version = read_current(root)
        if version is None:
            raise IndexLoadError(f"{root / CURRENT}: no index published yet")
        folder = root / version
        if folder.is_dir():
            return load_version(folder, use_gpu)
        if read_current(root) == version:
            break
    raise IndexLoadError(f"{root / CURRENT} names {version!r}, but {folder} does not exist")


def _load_current_remote(index_root, use_gpu: bool) -> LoadedIndex:
    """The store's live version: from the local build folder when complete, else downloaded."""
    uri, opts = storage.locate(index_root)
    version = read_current(index_root)
    if version is None:
        raise IndexLoadError(f"{uri}/{CURRENT}: no index published yet")
    if not storage.is_uri(index_root) and (Path(index_root) / version / INDEX_MANIFEST_FILE).is_file():
        return load_version(Path(index_root) / version, use_gpu)
    folder = storage.cache_dir(index_root) / "indexes" / uri.split("://", 1)[1] / version
    try:
        for name in VERSION_FILES:
            storage.download(f"{uri}/{version}/{name}", folder / name, opts)
    except FileNotFoundError:
        raise IndexLoadError(f"{uri}/{CURRENT} names {version!r}, but {uri}/{version} is incomplete") from None
    return load_version(folder, use_gpu)


def search(loaded: LoadedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for each query.

    queries: (nq, dim) or (dim,) float; returns ids (nq, k) object array of str (None where
    fewer than k items exist) and scores (nq, k) float32 (-inf there). Cosine indexes
    normalise the queries here, so callers pass raw vectors.
    """
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    dim = loaded.manifest.dim
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query dimension mismatch: got shape {tuple(np.shape(queries))}, index dim is {dim}")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN/inf")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if loaded.manifest.metric == "cosine":
        q = faiss_index.normalise(q)
    else:
        q = np.ascontiguousarray(q)
    scores, rows = loaded.index.search(q, int(k))
    ids = np.empty(rows.shape, dtype=object)
    ok = rows >= 0
    ids[ok] = loaded.ids[rows[ok]]
    scores = np.where(ok, scores, -np.inf).astype(np.float32)
    return ids, scores
