"""``lfm4ads serve retrieval``: top-K over HTTP from the live index, reloaded on swap.

Stack: FastAPI (pydantic request models, JSON errors) on uvicorn (h11), one process.
A request is one FAISS search (tens of microseconds to a few ms, releasing the GIL) run
in the server's thread pool, so both cores stay busy; scale out by running one process
per host (or core group) behind any HTTP load balancer: every process watches the same
``CURRENT``. The routes and statuses are in :mod:`retrieval.http_app`, the limits and
timeouts in :mod:`retrieval.http_guard` (:class:`~retrieval.http_config.ServiceConfig`),
the served bundle in :mod:`retrieval.http_served` and its watcher in :mod:`retrieval.http_state`.

Swap without dropped requests: a background watcher loads a new index version (and a
new user table version, and the log history for the new ``ds``) completely, checks that
index and user table agree on model version and dim, then replaces one reference; a
request reads that reference once and finishes on the bundle it began with. Anything
that fails to load, or a mismatched pair, leaves the old bundle serving and shows in
``/healthz``. At start-up the same problems refuse to start (:class:`ServiceStartError`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

from retrieval.http_config import ServiceConfig
from retrieval.http_served import ServiceStartError
from retrieval.http_state import ServingState

log = logging.getLogger(__name__)

__all__ = ["RetrievalServer", "ServiceConfig", "ServiceStartError", "make_server", "serve"]


class RetrievalServer:
    """A bound (not yet serving) uvicorn server around the app.

    ``serve_forever()`` blocks (the CLI); ``start()`` serves from a background thread
    (tests, benchmarks); ``shutdown()`` stops it gracefully; ``server_close()`` also stops
    the watcher and releases the socket. Also a context manager (start ... close).
    """

    def __init__(self, state: ServingState, cfg: ServiceConfig, host: str, port: int):
        import uvicorn

        from retrieval.http_app import create_app
        from retrieval.http_guard import protocol_class

        self.state, self.cfg = state, cfg
        self.app, self.metrics = create_app(state, cfg)
        self.socket = socket.create_server((host, port), backlog=1024)  # bound now: port 0 picks a free port
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            http=protocol_class(cfg, self.metrics),
            lifespan="off",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=cfg.idle_timeout_s,
            timeout_graceful_shutdown=cfg.graceful_shutdown_s,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def watcher(self) -> ServingState:  # the name of the stdlib server's attribute, kept for callers
        return self.state

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> RetrievalServer:
        self._thread = threading.Thread(target=self.serve_forever, name="retrieval-http", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError(f"retrieval service on {self.url} did not start")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.cfg.graceful_shutdown_s + 5)

    def server_close(self) -> None:
        self.state.stop()
        self.socket.close()

    def __enter__(self) -> RetrievalServer:  # noqa: PYI034 - the started server itself
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


def make_server(
    index_root: str | Path,
    user_table_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_path: str | Path | None = None,
    config: ServiceConfig | None = None,
    user_table_name: str | None = None,
    **overrides,
) -> RetrievalServer:
    """A bound server over ``index_root`` (port 0 picks a free port).

    user_table_path: the table whose newest day gives each user's query vector (None:
    by-id requests get the popularity fallback only); log_path: the canonical log, for
    the popularity fallback and ``exclude_seen`` (None: neither). ``overrides``: any
    :class:`ServiceConfig` field (``poll_s=0.05``, ``max_k``, ``omp_threads=None``, ...).
    Raises :class:`ServiceStartError` (one line, ``exit_code``) when the user table is
    missing or unreadable or does not match the live index's model version or dim.
    """
    cfg = config or ServiceConfig()
    if overrides:
        cfg = ServiceConfig.model_validate({**cfg.model_dump(), **overrides})
    if cfg.omp_threads is not None:
        import faiss

        faiss.omp_set_num_threads(cfg.omp_threads)
    state = ServingState(index_root, user_table_path, log_path, cfg, user_table_name=user_table_name)
    try:
        return RetrievalServer(state, cfg, host, port)
    except BaseException:
        state.stop()
        raise


def serve(
    index_root: str | Path,
    user_table_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    **kwargs,
) -> None:
    """Serve until SIGINT/SIGTERM (the ``lfm4ads serve retrieval`` entry point).

    uvicorn runs in a thread and the main thread waits on it, so a stop works whoever owns
    the signal handlers (the CLI keeps its own installed): the interrupt lands in the main
    thread, which asks uvicorn to stop taking requests and gives the in-flight ones
    ``graceful_shutdown_s``. A stop by signal is a normal end (returns)."""
    import signal

    server = make_server(index_root, user_table_path, host, port, **kwargs)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # plain `python -c serve(...)`: SIGTERM drains too
    try:
        server.start()
        log.info("retrieval service on %s (index root %s)", server.url, index_root)
        while server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        log.info("stopping: draining in-flight requests (at most %gs)", server.cfg.graceful_shutdown_s)
    finally:
        server.shutdown()
        server.server_close()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
