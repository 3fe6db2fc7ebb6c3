"""The retrieval service's guards around the app: limits, timeouts, JSON errors, access log, metrics.

Two layers, because some attacks never reach an ASGI app:

- :func:`protocol_class`: uvicorn's h11 protocol with (a) a deadline for a request's
  headers (a client that sends half a request line and stalls gets 408 and is closed;
  uvicorn alone waits forever once any byte arrived) and (b) a JSON body for the 400 it
  sends on a malformed request (bad ``Content-Length``, garbage request line, oversized
  header block), instead of uvicorn's plain text.
- :class:`Guard`: the outermost ASGI middleware. It rejects a declared body above
  ``max_body_bytes`` before reading it (413), and header blocks above ``max_header_bytes`` (431), reads the body under ``body_timeout_s``
  (408: a slow client holds no worker longer), counts bytes of chunked bodies, refuses
  JSON nested deeper than ``max_json_depth`` before any parser sees it (400: a parser
  recursion cannot be triggered), runs the app under ``request_timeout_s`` (503), turns
  any exception into a JSON 500, writes one access-log line per request (logger
  ``retrieval.access``) and records Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from retrieval.http_config import ServiceConfig

log = logging.getLogger(__name__)
access_log = logging.getLogger("retrieval.access")


class HttpError(Exception):
    """An error answered as ``{"error": message, "status": status}``; ``close`` ends the connection."""

    def __init__(self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.close, self.headers = status, message, close, headers or {}


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, brackets inside strings ignored.

    Vectorised (no recursion, no per-byte Python loop, linear even for pathological
    escapes): a quote opens or closes a string unless an odd run of backslashes precedes
    it; a bracket counts when an even number of real quotes precede it.
    """
    a = np.frombuffer(raw, np.uint8)
    if a.size == 0:
        return 0
    pos = np.arange(a.size)
    last_plain = np.maximum.accumulate(np.where(a != 0x5C, pos, -1))  # last non-backslash at or before i
    quotes = np.flatnonzero(a == 0x22)
    prev = quotes - 1
    run = np.where(prev >= 0, prev - last_plain[np.maximum(prev, 0)], 0)  # backslashes right before the quote
    toggle = np.zeros(a.size, np.int32)
    toggle[quotes[run % 2 == 0]] = 1
    outside = (np.cumsum(toggle) - toggle) % 2 == 0
    step = (((a == 0x5B) | (a == 0x7B)).astype(np.int32) - ((a == 0x5D) | (a == 0x7D)).astype(np.int32)) * outside
    return max(0, int(np.cumsum(step).max()))


class Metrics:
    """Prometheus metrics of one service instance (its own registry: several apps in one
    process, as in tests, do not collide)."""

    def __init__(self, state=None):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "retrieval_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "retrieval_http_request_seconds",
            "Time from request start to the last byte of the answer",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.rejected = Counter(
            "retrieval_http_rejected", "Connections refused at the protocol level", ["reason"], registry=r
        )
        self.answers = Counter("retrieval_answers", "Search answers by source of the query", ["source"], registry=r)
        if state is not None:
            Gauge("retrieval_index_reloads", "Bundles (index, users, log history) made live", registry=r).set_function(
                lambda: state.reloads
            )
            Gauge(
                "retrieval_swaps_refused", "New index/user-table pairs refused (model version or dim)", registry=r
            ).set_function(lambda: state.refused)
            Gauge("retrieval_problems", "Problems currently reported by /healthz", registry=r).set_function(
                lambda: len(state.problems)
            )
            Gauge("retrieval_index_items", "Items in the live index", registry=r).set_function(
                lambda: state.loaded.manifest.num_items if state.loaded else 0
            )
            Gauge("retrieval_users", "Users with a query vector in the live bundle", registry=r).set_function(
                lambda: len(state.served.users.rows) if state.served and state.served.users else 0
            )


class Guard:
    """ASGI middleware: body limits and timeouts, JSON errors, access log, metrics."""

    def __init__(self, app, cfg: ServiceConfig, metrics: Metrics, routes: set[str]):
        self.app, self.cfg, self.metrics, self.routes = app, cfg, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        out = {"status": 0, "bytes": 0, "started": False}

        async def send_counted(msg) -> None:
            if msg["type"] == "http.response.start":
                out["started"], out["status"] = True, msg["status"]
            elif msg["type"] == "http.response.body" and scope["method"] != "HEAD":  # uvicorn drops HEAD bodies
                out["bytes"] += len(msg.get("body", b""))
            await send(msg)

        try:
            body = await self._read_body(scope, receive)
            depth = self.cfg.max_json_depth
            # bytes.count is C-fast; the scan is only needed when enough brackets could nest
            if body and body.count(b"[") + body.count(b"{") > depth and json_depth(body) > depth:
                raise HttpError(400, f"JSON nested deeper than {depth} levels")
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await asyncio.wait_for(self.app(scope, replay, send_counted), self.cfg.request_timeout_s)
        except HttpError as e:
            await self._error(send_counted, out, e)
        except TimeoutError:
            await self._error(
                send_counted,
                out,
                HttpError(503, f"request not answered within {self.cfg.request_timeout_s:g}s", close=True),
            )
        except _ClientGone:
            out["status"] = out["status"] or 499  # nobody to answer; logged as nginx does
        except Exception as e:
            log.exception("%s %s failed", scope["method"], scope["path"])
            await self._error(send_counted, out, HttpError(500, f"internal error: {type(e).__name__}: {e}"))
        finally:
            self._record(scope, out, time.perf_counter() - t0)

    async def _read_body(self, scope, receive) -> bytes:
        head = sum(len(k) + len(v) + 4 for k, v in scope["headers"])  # h11 bounds only headers split over reads
        if head > self.cfg.max_header_bytes:
            raise HttpError(
                431,
                f"request headers of {head} bytes exceed the limit of {self.cfg.max_header_bytes} bytes",
                close=True,
            )
        limit = self.cfg.max_body_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and int(declared) > limit:  # h11 already refused a malformed one
            raise HttpError(413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes", close=True)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.cfg.body_timeout_s):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise HttpError(413, f"body exceeds the limit of {limit} bytes", close=True)
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            raise HttpError(
                408, f"request body not received within {self.cfg.body_timeout_s:g}s ({size} bytes arrived)", close=True
            ) from None
        return b"".join(chunks)

    async def _error(self, send, out: dict, e: HttpError) -> None:
        if out["started"]:  # too late for a status: the connection is cut instead
            return
        body = error_body(e.status, e.message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in e.headers.items()]
        if e.close:
            headers.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": e.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except OSError:
            pass

    def _record(self, scope, out: dict, secs: float) -> None:
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = out["status"] or 500
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route).observe(secs)
        client = scope.get("client")
        addr = f"{client[0]}:{client[1]}" if client else "-"
        query = scope.get("query_string", b"")
        target = path + ("?" + query.decode("latin-1") if query else "")
        access_log.info(
            '%s "%s %s" %d %d %.2fms',
            addr,
            scope["method"],
            target,
            status,
            out["bytes"],
            secs * 1e3,
            extra={
                "client": addr,
                "method": scope["method"],
                "path": path,
                "status": status,
                "bytes": out["bytes"],
                "ms": round(secs * 1e3, 3),
            },
        )


class _ClientGone(Exception):
    """The client disconnected before its body arrived."""


def protocol_class(cfg: ServiceConfig, metrics: Metrics | None = None):
    """uvicorn's h11 protocol with a header deadline and JSON 4xx for malformed requests."""
    import h11
    from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

    head_timeout = cfg.head_timeout_s

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            # Headers and body leave in two writes; with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms a request). asyncio sets TCP_NODELAY only on
            # sockets whose proto is IPPROTO_TCP, which a socket from create_server is not.
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._head_timer = None
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():  # the next request's headers get a fresh deadline
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(head_timeout, self._head_expired)

        def _cancel_head_timer(self) -> None:
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # headers arrived; the body and the answer have their own deadlines
            if metrics is not None:
                metrics.rejected.labels("head_timeout").inc()
            self.logger.warning("%s: request headers not complete within %gs; closing", self.client, head_timeout)
            self._send_json_and_close(408, f"request headers not received within {head_timeout:g}s")

        def send_400_response(self, msg: str) -> None:
            exc = sys.exc_info()[1]  # called from uvicorn's `except h11.RemoteProtocolError`
            status = getattr(exc, "error_status_hint", 400) if exc is not None else 400
            detail = f"malformed HTTP request: {exc}" if exc is not None and str(exc) else msg
            if metrics is not None:
                metrics.rejected.labels("malformed").inc()
            self._send_json_and_close(status, detail)

        def _send_json_and_close(self, status: int, message: str) -> None:
            body = error_body(status, message)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            try:
                data = self.conn.send(h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]))
                data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(data)
            except h11.LocalProtocolError:
                pass  # the connection is in no state to answer: just close it
            self.transport.close()

    return GuardedH11Protocol
