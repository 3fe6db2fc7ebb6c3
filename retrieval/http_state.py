"""What the retrieval service serves, and the background watcher that swaps it.

A :class:`Served` bundle is one consistent triple: the live index, the user table's query
vectors (same ``model_version`` and dim as the index), and the log history (popularity and
engaged items up to the index's ``ds``). Requests take the bundle reference once, so a
request never mixes two indexes or an index with user vectors of another model.

:class:`ServingState` loads the first bundle at start-up (a bad user table or a model
version mismatch raises :class:`ServiceStartError`: the service refuses to start) and then
runs a daemon thread that polls ``CURRENT`` (every ``poll_s``) and the user table and the
log (every ``tables_poll_s``). A change is loaded completely off the request path and
becomes live with one reference assignment; anything that fails to load, or a new pair
whose model versions disagree, leaves the old bundle serving and is reported by
``/healthz`` (``problems``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.errors import EXIT_BAD_CONFIG, EXIT_BAD_INPUT
from engines import delta_io
from retrieval import fallback, store
from retrieval.http_config import ServiceConfig
from retrieval.source import SourceError, read_snapshot

log = logging.getLogger(__name__)


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


class ServingState:
    """Holds the live :class:`Served` bundle; a daemon thread swaps in new ones."""

    def __init__(
        self,
        index_root: str | Path,
        user_table: str | Path | None = None,
        log_path: str | Path | None = None,
        cfg: ServiceConfig | None = None,
        *,
        user_table_name: str | None = None,
        watch: bool = True,
    ):
        from engines.storage import as_location

        self.cfg = cfg or ServiceConfig()
        self.root = as_location(index_root)  # a local folder or an object-store URI
        self.user_path = None if user_table is None else str(user_table)
        self.user_name = user_table_name or (None if user_table is None else Path(str(user_table)).name)
        self.log_path = None if log_path is None else str(log_path)
        self.served: Served | None = None
        self.failed: str | None = None  # index version that failed to load (not retried until CURRENT changes)
        self.problems: dict[str, str] = {}  # what keeps a newer version from serving: kind -> message
        self.reloads = 0
        self.refused = 0
        self._users: UserVectors | None = None  # newest loaded user vectors (maybe not yet paired)
        self._index: store.LoadedIndex | None = None  # newest loaded index (maybe not yet paired)
        self._rejected: tuple | None = None  # (index version, users version) refused as a pair
        self._tables_due = 0.0
        self._hist_key: tuple | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start()
        self._thread = None
        if watch:
            self._thread = threading.Thread(target=self._run, name="retrieval-watcher", daemon=True)
            self._thread.start()

    # --- start-up: every problem is fatal -------------------------------------------
    def _start(self) -> None:
        if self.user_path is not None:
            if not delta_io.exists(self.user_path):
                raise ServiceStartError(
                    f"user table {self.user_name}: no Delta table at {self.user_path}", EXIT_BAD_CONFIG
                )
        if self.log_path is not None and delta_io.exists(self.log_path):
            try:
                fallback.positive_task_name(self.log_path, self.cfg.positive_task)
            except ValueError as e:
                raise ServiceStartError(str(e), EXIT_BAD_CONFIG) from None
        index = None
        if store.read_current(self.root) is None:
            log.warning("no index live under %s yet: /search answers 503 until one is published", self.root)
        else:
            try:
                index = store.load_current(self.root, self.cfg.use_gpu)
            except store.IndexLoadError as e:
                raise ServiceStartError(f"live index: {e}") from None
        if self.user_path is not None:
            want = None if index is None else pinned_ds(index, self.user_name)
            try:
                self._users = load_users(self.user_path, self.user_name, want)
            except SourceError as e:
                raise ServiceStartError(f"user table {self.user_name}: {e}") from None
        if index is None:
            return
        problem = pair_problem(index, self._users)
        if problem:
            raise ServiceStartError(f"refusing to start: {problem}")
        try:
            hist = self._history(index)
        except Exception as e:  # noqa: BLE001 - an unreadable log: one line, exit 5
            raise ServiceStartError(f"log {self.log_path}: popularity and engaged items not readable: {e}") from None
        self._index = index
        self.served = Served(index, self._users, hist)
        self.reloads = 1
        self._log_served()

    def _history(self, index: store.LoadedIndex, old: fallback.LogHistory | None = None) -> fallback.LogHistory:
        """Popularity and engaged items for ``index`` (its ds and item rows); ``old`` when
        neither the index version nor the log's Delta version changed."""
        if self.log_path is None:
            return fallback.empty_history(index.manifest.ds)
        key = (index.version, fallback.log_version(self.log_path))
        if old is not None and key == self._hist_key:
            return old
        hist = fallback.load_history(self.log_path, index.manifest.ds, index.ids, self.cfg.positive_task)
        self._hist_key = key
        return hist

    def _log_served(self) -> None:
        s = self.served
        u = s.users
        log.info(
            "serving index %s (%d items, model_version %s, ds %s); users %s; popularity from %d log day(s)",
            s.index.version,
            s.index.manifest.num_items,
            s.index.manifest.model_version,
            s.index.manifest.ds,
            f"{u.name} ds={u.ds} ({len(u.rows)})" if u else "none",
            s.history.days,
        )

    # --- the watcher ----------------------------------------------------------------
    @property
    def loaded(self) -> store.LoadedIndex | None:
        s = self.served
        return None if s is None else s.index

    def check(self, tables: bool = True) -> None:
        """Load what changed (index, and with ``tables`` the user table and the log); swap
        when the new bundle is consistent, else keep serving the old one."""
        with self._lock:
            self._check(tables)

    def _check(self, tables: bool) -> None:
        cur = self.served
        version = store.read_current(self.root)
        if version is not None and version != self.failed and (self._index is None or self._index.version != version):
            try:
                self._index = store.load_current(self.root, self.cfg.use_gpu)
                self.failed = None
                self.problems.pop("index", None)
            except store.IndexLoadError as e:
                self.failed = version
                self.problems["index"] = (
                    f"index {version} not loaded, still serving {cur.index.version if cur else 'nothing'}: {e}"
                )
                log.error("%s", self.problems["index"])
        index = self._index
        want = None if index is None else pinned_ds(index, self.user_name)
        if self.user_path is not None and (
            tables or (want is not None and (self._users is None or self._users.ds != want))
        ):
            self._reload_users(want)
        users = self._users
        if index is None:
            return
        if cur is not None and cur.index is index and cur.users is users:
            if tables and self.log_path is not None:  # only the log may have changed
                self._swap_history(cur)
            return
        key = (index.version, users and (users.table_version, users.ds))
        if key == self._rejected:
            return
        problem = pair_problem(index, users, want)
        if problem:
            self._rejected = key
            self.refused += 1
            self.problems["pair"] = (
                f"not swapped, still serving index {cur.index.version if cur else 'nothing'}"
                f"{f' with {cur.users.name} ds={cur.users.ds}' if cur and cur.users else ''}: {problem}"
            )
            log.error("%s", self.problems["pair"])
            return
        try:
            hist = self._history(index, cur.history if cur else None)
        except Exception as e:  # noqa: BLE001 - an unreadable log keeps the old bundle
            self.problems["log"] = f"log history for ds={index.manifest.ds} not loaded: {e}"
            log.error("%s", self.problems["log"])
            return
        for kind in ("pair", "log"):
            self.problems.pop(kind, None)
        self._rejected = None
        self.served = Served(index, users, hist)  # one reference swap: in-flight requests keep theirs
        self.reloads += 1
        self._log_served()

    def _swap_history(self, cur: Served) -> None:
        try:
            hist = self._history(cur.index, cur.history)
        except Exception as e:  # noqa: BLE001
            self.problems["log"] = f"log history for ds={cur.index.manifest.ds} not reloaded: {e}"
            log.error("%s", self.problems["log"])
            return
        self.problems.pop("log", None)
        if hist is not cur.history:
            self.served = Served(cur.index, cur.users, hist)
            log.info("log history reloaded: %d day(s) up to ds=%s", hist.days, hist.ds)

    def _reload_users(self, want_ds: str | None) -> None:
        """The newest day of the user table, or day ``want_ds`` (the live index's pairing),
        reloaded when the table's Delta version or the wanted day changed."""
        try:
            version = delta_io.open_table(self.user_path).version()
            u = self._users
            if u is not None and u.table_version == version and (want_ds is None or u.ds == want_ds):
                return
            self._users = load_users(self.user_path, self.user_name, want_ds)
            self.problems.pop("users", None)
        except (SourceError, FileNotFoundError, OSError) as e:
            self.problems["users"] = (
                f"user table {self.user_name} not reloaded, keeping ds={self._users.ds if self._users else None}: {e}"
            )
            log.error("%s", self.problems["users"])

    def _run(self) -> None:
        import time

        while not self._stop.wait(self.cfg.poll_s):
            now = time.monotonic()
            tables = now >= self._tables_due
            if tables:
                self._tables_due = now + self.cfg.tables_poll_s
            try:
                self.check(tables)
            except Exception:
                log.exception("retrieval watcher")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


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
