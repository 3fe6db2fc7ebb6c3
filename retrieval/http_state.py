"""The background watcher that swaps what the retrieval service serves.

:class:`ServingState` loads the first :class:`Served` bundle (retrieval/http_served.py) at
start-up (a bad user table or a model version mismatch raises :class:`ServiceStartError`:
the service refuses to start) and then runs a daemon thread that polls ``CURRENT`` (every
``poll_s``) and the user table and the log (every ``tables_poll_s``). A change is loaded
completely off the request path and becomes live with one reference assignment; anything
that fails to load, or a new pair whose model versions disagree, leaves the old bundle
serving and is reported by ``/healthz`` (``problems``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from contracts.errors import EXIT_BAD_CONFIG
from engines import delta_io
from retrieval import fallback, store
from retrieval.http_config import ServiceConfig
from retrieval.http_served import (
    Served,
    ServiceStartError,
    UserVectors,
    load_users,
    pair_problem,
    pinned_ds,
)
from retrieval.source import SourceError

log = logging.getLogger(__name__)


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
