"""What the retrieval service serves: a :class:`Served` bundle is one consistent triple, the live
index, the user table's query vectors (:class:`UserVectors`, same ``model_version`` and dim as
the index: :func:`pair_problem`) and the log history (popularity and engaged items up to the
index's ``ds``). Requests take the bundle reference once, so a request never mixes two indexes
or an index with user vectors of another model.

Also which user table the service reads (:func:`resolve_user_table`) and the one error that
refuses a start (:class:`ServiceStartError`). The watcher that swaps bundles:
retrieval/http_state.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.errors import EXIT_BAD_CONFIG, EXIT_BAD_INPUT
from engines import delta_io
from retrieval import fallback, store
from retrieval.source import read_snapshot


class ServiceStartError(RuntimeError):
    """The service cannot start as configured; one readable line. ``exit_code``: 2 bad
    config (a wrong ``--user-table``, an unknown task), 5 bad input (unreadable user table,
    index / user table model version or dim mismatch)."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class UserVectors:
    """Newest day of a user table. vectors: (n, dim) float32; rows: user id -> row."""

    name: str
    path: str
    ds: str
    table_version: int
    model_version: str
    rows: dict[str, int] = field(repr=False)
    vectors: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, user_id: str) -> np.ndarray | None:
        row = self.rows.get(user_id)
        return None if row is None else self.vectors[row]


def load_users(path: str | Path, name: str | None = None, ds: str | None = None) -> UserVectors:
    """Day ``ds`` (newest when None) of a user table; raises :class:`SourceError` naming the
    table for anything unreadable."""
    snap = read_snapshot(path, ds)
    rows = {u: i for i, u in enumerate(snap.ids.tolist())}
    return UserVectors(
        name or Path(str(path)).name, str(path), snap.ds, snap.table_version, snap.model_version, rows, snap.vectors
    )


@dataclass(frozen=True)
class Served:
    index: store.LoadedIndex
    users: UserVectors | None
    history: fallback.LogHistory


def pinned_ds(index: store.LoadedIndex, user_table: str | None) -> str | None:
    """The user-table partition an index version was built and gated with (the paired
    query step records ``query_table``/``query_ds`` in the manifest), when it is the
    served table; None: no pairing recorded, the newest day serves."""
    m = index.manifest
    table, ds = getattr(m, "query_table", None), getattr(m, "query_ds", None)
    return ds if table and ds and table == user_table else None


def pair_problem(index: store.LoadedIndex, users: UserVectors | None, want_ds: str | None = None) -> str | None:
    """Why ``users`` cannot query ``index`` (model version, dim, or not the recorded
    partition ``want_ds``), or None."""
    if users is None:
        return None
    m = index.manifest
    if want_ds is not None and users.ds != want_ds:
        return f"index {m.version} pairs with {users.name} ds={want_ds}, which is not loaded (have ds={users.ds})"
    if users.model_version != m.model_version:
        return (
            f"index {m.version} was built from model_version {m.model_version!r} ({m.source_table} ds={m.ds}) "
            f"but user table {users.name} (ds={users.ds}) has model_version {users.model_version!r}"
        )
    if users.dim != m.dim:
        return f"index {m.version} has dim {m.dim} but user table {users.name} (ds={users.ds}) has dim {users.dim}"
    return None


def resolve_user_table(tables_root: str | Path, name: str | None) -> tuple[str, Path] | None:
    """``(name, path)`` of the user table the service reads query vectors from.

    name None: ``user_query`` (the query tower's table) when published, else ``user_ur``
    when published, else None (by-id requests get the popularity fallback only). A
    named table must exist and be a user table: :class:`ServiceStartError` (exit 2).
    """
    from contracts import REPRESENTATION_TABLES

    root = Path(tables_root)
    if name is None:
        for candidate in ("user_query", "user_ur"):
            if delta_io.exists(root / candidate):
                return candidate, root / candidate
        return None
    known = REPRESENTATION_TABLES.get(name)
    if name.startswith("item_") or (known is not None and known.entity != "user"):
        raise ServiceStartError(
            f"--user-table {name}: an item table cannot give user query vectors (use user_query, user_ur or user_cr)",
            EXIT_BAD_CONFIG,
        )
    if not delta_io.exists(root / name):
        have = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("user")) if root.is_dir() else []
        )
        raise ServiceStartError(
            f"--user-table {name}: no published table at {root / name} "
            f"(user tables there: {', '.join(have) or 'none'})",
            EXIT_BAD_CONFIG,
        )
    return name, root / name
