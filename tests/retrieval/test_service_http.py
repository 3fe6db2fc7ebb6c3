"""The service's HTTP hardening on a real uvicorn server, with raw sockets: malformed
Content-Length, slow clients (headers and body), deeply nested JSON, oversized bodies
(declared and chunked), 404/405, a request timeout and a bug as JSON errors; the JSON
depth scan against a plain recursive reference."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time

import pytest

from retrieval.http_config import ServiceConfig
from retrieval.http_guard import Guard, Metrics, json_depth
from tests.retrieval.test_service import call, make_run, start

TIMEOUT = 0.6  # the slow-client deadlines of this file's server
LIMIT = 300_000  # its body limit


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("http"))
    server = start(
        run, head_timeout_s=TIMEOUT, body_timeout_s=TIMEOUT, max_body_bytes=LIMIT, max_json_depth=8, idle_timeout_s=0.3
    )
    yield server
    server.shutdown()
    server.server_close()


def raw(server, data: bytes, *, wait: float = 10.0, pause_after: float = 0.0) -> tuple[int, dict, bytes]:
    """Send ``data`` on a fresh connection (then stay silent), read until the server
    closes or ``wait`` passes; returns (status, JSON body, raw response)."""
    host, port = server.server_address
    with socket.create_connection((host, port), timeout=wait) as s:
        s.sendall(data)
        if pause_after:
            time.sleep(pause_after)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                resp = b"".join(chunks)
                head, _, body = resp.partition(b"\r\n\r\n")
                n = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")),
                    None,
                )
                if n is not None and len(body) >= n:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, json.loads(body) if body else {}, resp


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def alive(server) -> bool:
    return call(server.url + "/search", {"user_id": "u1", "k": 2})[0] == 200


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"5, 7"])
def test_malformed_content_length_is_a_json_400(svc, length):
    status, out, resp = raw(svc, b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert status == 400 and out["status"] == 400 and "malformed HTTP request" in out["error"]
    assert b"content-type: application/json" in resp.lower()
    assert alive(svc)


def test_garbage_request_line_and_huge_headers_are_json_4xx(svc):
    status, out, _ = raw(svc, b"\x16\x03\x01 hello\r\n\r\n")
    assert status == 400 and "malformed HTTP request" in out["error"]
    status, out, _ = raw(svc, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert status == 431 and out["error"] == "request headers of 100018 bytes exceed the limit of 16384 bytes"
    assert alive(svc)


def test_slow_client_headers_get_408_and_others_are_served_meanwhile(svc):
    host, port = svc.server_address
    with socket.create_connection((host, port), timeout=10) as slow:
        slow.sendall(b"POST /search HTTP/1.1\r\nHost: t\r\nConte")  # ... and stalls
        t0 = time.monotonic()
        assert alive(svc)  # the stalled connection holds nothing
        data = slow.recv(65536)
        waited = time.monotonic() - t0
        assert slow.recv(65536) == b""  # then closed
    assert data.startswith(b"HTTP/1.1 408") and b"request headers not received within 0.6s" in data
    assert waited < 8  # the deadline, not the client, ended it


def test_slow_client_body_gets_408(svc):
    status, out, resp = raw(svc, post(b'{"user_id": "u1", "k": 2}')[:-10])  # body announced, 10 bytes missing
    assert status == 408 and "request body not received within 0.6s" in out["error"]
    assert b"connection: close" in resp.lower()
    assert alive(svc)


def test_idle_keep_alive_connection_is_closed(svc):
    host, port = svc.server_address
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        got = b""
        while chunk := s.recv(65536):  # the answer, then the close by the idle timeout
            got += chunk
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"}")
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"user_id": ' + b"[" * 9 + b"]" * 9 + b"}"])
def test_deeply_nested_json_is_refused_before_parsing(svc, body):
    # 100k levels would exhaust a recursive parser; a linear scan refuses it first (max depth 8)
    status, out, _ = raw(svc, post(body))
    assert status == 400 and out["error"] == "JSON nested deeper than 8 levels"
    assert alive(svc)


def test_nested_json_under_the_limit_reaches_validation(svc):
    status, out, _ = raw(svc, post(b'{"user_id": [[[["u1"]]]]}'))
    assert status == 422 and "user_id: Input should be a valid string" in out["error"]


def test_oversized_body_declared_and_chunked(svc):
    status, out, resp = raw(svc, b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
    assert status == 413 and out["error"] == f"body of 10000000 bytes exceeds the limit of {LIMIT} bytes"
    assert b"connection: close" in resp.lower()
    chunk = b'{"vector": [' + b"1.0, " * 20_000
    chunked = b"POST /search HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(4)
    )
    status, out, _ = raw(svc, chunked)
    assert status == 413 and out["error"] == f"body exceeds the limit of {LIMIT} bytes"
    assert alive(svc)


def test_unknown_path_and_wrong_method_are_json(svc):
    status, out = call(svc.url + "/nope")
    assert status == 404 and "no such path '/nope'" in out["error"]
    status, out, resp = raw(svc, b"DELETE /search HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 405 and out["error"] == "method DELETE not allowed on /search (allowed: GET, POST)"
    assert b"allow: get, post" in resp.lower()
    status, out = call(svc.url + "/healthz", b"{}")
    assert status == 405 and out["status"] == 405


def test_request_timeout_and_bug_are_json_and_the_server_lives_on():
    """A real uvicorn server with the same guard around an app that sleeps and one that raises."""
    import uvicorn

    from retrieval.http_guard import protocol_class

    async def inner(scope, receive, send):  # a plain ASGI app: no framework error handling of its own
        if scope["path"] == "/sleep":
            await asyncio.sleep(5)
        if scope["path"] == "/boom":
            raise RuntimeError("planted bug")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    cfg = ServiceConfig(request_timeout_s=0.3)
    metrics = Metrics()
    app = Guard(inner, cfg, metrics, {"/sleep", "/boom", "/ok"})
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, http=protocol_class(cfg, metrics), lifespan="off", log_config=None, access_log=False)
    )
    import threading

    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    try:
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        status, out = call(url + "/sleep")
        assert status == 503 and out["error"] == "request not answered within 0.3s"
        status, out = call(url + "/boom")
        assert status == 500 and out["error"] == "internal error: RuntimeError: planted bug"
        assert call(url + "/ok") == (200, {"ok": True})
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


def _depth(x) -> int:
    """Plain recursive reference."""
    if isinstance(x, list):
        return 1 + max((_depth(v) for v in x), default=0)
    if isinstance(x, dict):
        return 1 + max((_depth(v) for v in x.values()), default=0)
    return 0


def _random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 6 or r < 0.3:
        return rng.choice([1, 2.5, None, True, "a[b", 'q"[{', "\\", '\\"]]', "}{", ""])
    if r < 0.65:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["k", "[", '"{', "\\"]) + str(i): _random_json(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_json_depth_matches_a_recursive_reference():
    rng = random.Random(0)
    for _ in range(300):
        doc = _random_json(rng)
        text = json.dumps(doc, indent=rng.choice([None, 1]))
        assert json_depth(text.encode()) == _depth(doc), text
    assert json_depth(b"") == 0 and json_depth(b'"[[[["') == 0
    assert json_depth(b'"\\\\"[[') == 2  # an escaped backslash does not escape the quote
    assert json_depth(b"[" * 50_000) == 50_000
