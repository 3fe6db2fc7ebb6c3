"""``lfm4ads serve retrieval``: top-K over HTTP from the live index, reloaded on swap.

Why the stdlib ``ThreadingHTTPServer`` and not Ray Serve or an ASGI app: the work per
request is one FAISS search (tens of microseconds to a few ms, releasing the GIL), so a
thread per connection is enough on one host; it needs no extra package, starts in
milliseconds, and the reload logic is a single reference swap. Scale out by running one
process per host (or core group) behind any HTTP load balancer: every process watches
the same ``CURRENT``.

API (JSON in, JSON out)::

    POST /search  {"vector": [floats], "k": 10}  or  {"user_id": "u1", "k": 10}
    GET  /search?user_id=u1&k=10
    GET  /healthz
    -> 200 {"ids": [...], "scores": [...], "index_version": "...", "k": 10}
    -> 4xx {"error": "message"} for bad requests (400 malformed / out of range,
       404 unknown user or path, 409 user vector dim != index dim), 503 while no index is live.

Swap without dropped requests: a watcher thread polls ``CURRENT``; when it names a new
version the watcher loads it completely, then replaces one reference. A request takes that
reference once at its start, so it finishes on the index it began with; a version that
fails to load (corrupted file) is logged and the previous index keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from engines import delta_io
from retrieval import store
from retrieval.source import read_snapshot

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class IndexWatcher:
    """Holds the live :class:`LoadedIndex`; a daemon thread reloads it when CURRENT changes."""

    def __init__(self, index_root: str | Path, poll_s: float = 0.5, use_gpu: bool = True):
        from engines.storage import as_location

        self.root = as_location(index_root)  # a local folder or an object-store URI
        self.poll_s = poll_s
        self.use_gpu = use_gpu
        self.loaded: store.LoadedIndex | None = None
        self.failed: str | None = None  # version that failed to load (not retried until CURRENT changes)
        self.reloads = 0
        self._stop = threading.Event()
        self.check()
        self._thread = threading.Thread(target=self._run, name="index-watcher", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Load the version CURRENT names if it is new; keep serving the old one on failure."""
        version = store.read_current(self.root)
        if version is None or version == self.failed:
            return
        if self.loaded is not None and self.loaded.version == version:
            return
        try:
            new = store.load_current(self.root, self.use_gpu)
        except store.IndexLoadError as e:
            self.failed = version
            log.error("index %s not loaded, still serving %s: %s", version, self.loaded and self.loaded.version, e)
            return
        self.loaded, self.failed = new, None  # one reference swap: in-flight requests keep theirs
        self.reloads += 1
        log.info("serving index %s (%d items)", new.version, new.manifest.num_items)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must never die
                log.exception("index watcher")

    def stop(self) -> None:
        self._stop.set()


class UserVectors:
    """user id -> vector from the newest day of a user table; reloaded when the table changes."""

    def __init__(self, table_path: str | Path | None, poll_s: float = 10.0):
        self.path = table_path
        self.poll_s = poll_s
        self.rows: dict[str, int] = {}
        self.vectors = np.zeros((0, 0), np.float32)
        self.version: int | None = None
        self._last_poll = 0.0
        self._lock = threading.Lock()
        if table_path is not None:
            self._load()

    def _load(self) -> None:
        version = delta_io.open_table(self.path).version()
        if version == self.version:
            return
        snap = read_snapshot(self.path)
        rows = {u: i for i, u in enumerate(snap.ids.tolist())}
        self.rows, self.vectors, self.version = rows, snap.vectors, version
        log.info("user vectors: %d from %s ds=%s", len(rows), self.path, snap.ds)

    def lookup(self, user_id: str) -> np.ndarray:
        if self.path is None:
            raise RequestError(400, "user_id lookups are disabled: the service was started without a user table")
        now = time.monotonic()
        if now - self._last_poll > self.poll_s and self._lock.acquire(blocking=False):
            try:
                self._last_poll = now
                self._load()
            except Exception as e:  # noqa: BLE001 - keep the old vectors on a bad reload
                log.error("user table reload failed, keeping version %s: %s", self.version, e)
            finally:
                self._lock.release()
        rows, vectors = self.rows, self.vectors
        row = rows.get(user_id)
        if row is None:
            raise RequestError(404, f"unknown user_id {user_id!r}")
        return vectors[row]


class RetrievalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, watcher: IndexWatcher, users: UserVectors, max_k: int):
        super().__init__(addr, Handler)
        self.watcher, self.users, self.max_k = watcher, users, max_k

    def server_close(self) -> None:
        self.watcher.stop()
        super().server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms per request on loopback).
    disable_nagle_algorithm = True
    server: RetrievalServer

    def log_message(self, fmt, *args):  # access log at debug level, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, fn) -> None:
        try:
            self._send(200, fn())
        except RequestError as e:
            self._send(e.status, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - a bug answers 500, the server lives on
            log.exception("request failed")
            self._send(500, {"error": f"internal error: {type(e).__name__}: {e}"})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._handle(self._health)
        elif url.path == "/search":
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._handle(lambda: self._search(q))
        else:
            self._send(404, {"error": f"no such path {url.path!r}; use /search or /healthz"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/search":
            self._send(404, {"error": f"no such path {url.path!r}; POST /search"})
            return
        self._handle(lambda: self._search(self._json_body()))

    def _json_body(self) -> dict:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise RequestError(413, f"body of {n} bytes exceeds {MAX_BODY}")
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "body must be a JSON object")
        return body

    def _health(self) -> dict:
        loaded = self.server.watcher.loaded
        if loaded is None:
            raise RequestError(503, f"no index live under {self.server.watcher.root}")
        return {
            "status": "ok",
            "index_version": loaded.version,
            "num_items": loaded.manifest.num_items,
            "dim": loaded.manifest.dim,
            "users": len(self.server.users.rows),
        }

    def _search(self, body: dict) -> dict:
        loaded = self.server.watcher.loaded  # taken once: a swap mid-request cannot mix indexes
        if loaded is None:
            raise RequestError(503, f"no index live under {self.server.watcher.root}")
        unknown = set(body) - {"vector", "user_id", "k"}
        if unknown:
            raise RequestError(400, f"unknown field(s) {sorted(unknown)}; expected vector or user_id, and k")
        k = _parse_k(body.get("k", 10), self.server.max_k)
        has_vec, has_user = "vector" in body, "user_id" in body
        if has_vec == has_user:
            raise RequestError(400, "give exactly one of 'vector' or 'user_id'")
        dim = loaded.manifest.dim
        if has_user:
            vec = self.server.users.lookup(str(body["user_id"]))
            if vec.shape[0] != dim:
                raise RequestError(409, f"user vectors have dim {vec.shape[0]} but index {loaded.version} has dim {dim}")
        else:
            vec = _parse_vector(body["vector"], dim)
        ids, scores = store.search(loaded, vec, k)
        keep = ids[0] != None  # noqa: E711 - object array: fewer than k items
        return {
            "ids": ids[0][keep].tolist(),
            "scores": [round(float(s), 6) for s in scores[0][keep]],
            "index_version": loaded.version,
            "k": k,
        }


def _parse_k(raw, max_k: int) -> int:
    try:
        k = int(raw)
        if isinstance(raw, float) and raw != k or isinstance(raw, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise RequestError(400, f"k must be an integer, got {raw!r}") from None
    if not 1 <= k <= max_k:
        raise RequestError(400, f"k={k} out of range [1, {max_k}]")
    return k


def _parse_vector(raw, dim: int) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        raise RequestError(400, "vector must be a list of numbers")
    if len(raw) != dim:
        raise RequestError(400, f"vector has length {len(raw)}, the index has dim {dim}")
    try:
        vec = np.asarray([float(x) for x in raw], dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(400, "vector must contain only numbers") from None
    if not np.isfinite(vec).all():
        raise RequestError(400, "vector contains NaN/inf")
    return vec


def make_server(
    index_root: str | Path,
    user_table_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    poll_s: float = 0.5,
    max_k: int = 1000,
    use_gpu: bool = True,
    omp_threads: int | None = 1,
) -> RetrievalServer:
    """A bound, not yet started server (``serve_forever()`` it; port 0 picks a free port).

    omp_threads=1: requests already run in parallel threads; FAISS's own OpenMP threads on
    top would oversubscribe the cores.
    """
    if omp_threads is not None:
        import faiss

        faiss.omp_set_num_threads(omp_threads)
    watcher = IndexWatcher(index_root, poll_s=poll_s, use_gpu=use_gpu)
    users = UserVectors(user_table_path)
    return RetrievalServer((host, port), watcher, users, max_k)


def serve(
    index_root: str | Path,
    user_table_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    **kwargs,
) -> None:
    """Serve until interrupted (the ``lfm4ads serve retrieval`` entry point)."""
    server = make_server(index_root, user_table_path, host, port, **kwargs)
    log.info("retrieval service on %s (index root %s)", server.url, index_root)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
