"""The HTTP service on loopback: answers, 4xx messages, reload on swap, corrupted swap ignored."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from retrieval import RetrievalConfig, build_index, store
from retrieval.service import make_server
from tests.retrieval.helpers import clustered, make_table, numpy_topk

DS = "2026-01-02"
CFG = RetrievalConfig(k_values=[5], eval_queries=40)


def _call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def service(tmp_path):
    items = clustered(300, 8, seed=1)
    users = clustered(20, 8, seed=2)
    make_table(tmp_path / "item_ir", [f"i{j}" for j in range(300)], items)
    make_table(tmp_path / "user_ur", [f"u{j}" for j in range(20)], users, name="user_ur")
    build_index(tmp_path / "item_ir", DS, tmp_path / "idx", CFG)
    server = make_server(tmp_path / "idx", tmp_path / "user_ur", port=0, poll_s=0.05, omp_threads=None)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server, items, users, tmp_path
    server.shutdown()
    server.server_close()


def test_vector_and_user_queries_match_bruteforce(service):
    server, items, users, _ = service
    status, out = _call(server.url + "/search", {"vector": users[3].tolist(), "k": 7})
    rows, _ = numpy_topk(items, users[3:4], 7)
    assert status == 200 and out["ids"] == [f"i{j}" for j in rows[0]] and out["k"] == 7
    status, by_user = _call(server.url + "/search", {"user_id": "u3", "k": 7})
    assert status == 200 and by_user["ids"] == out["ids"]
    status, by_get = _call(server.url + "/search?user_id=u3&k=7")
    assert status == 200 and by_get["ids"] == out["ids"]
    status, health = _call(server.url + "/healthz")
    assert status == 200 and health["num_items"] == 300 and health["users"] == 20


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"user_id": "nobody"}, 404, "unknown user_id 'nobody'"),
        ({"vector": [1.0, 2.0]}, 400, "vector has length 2, the index has dim 8"),
        ({"vector": ["a"] * 8}, 400, "only numbers"),
        ({"vector": [1.0] * 8, "k": 0}, 400, "out of range"),
        ({"vector": [1.0] * 8, "k": 5000}, 400, "out of range"),
        ({"vector": [1.0] * 8, "k": "ten"}, 400, "k must be an integer"),
        ({"vector": [1.0] * 8, "user_id": "u1"}, 400, "exactly one"),
        ({}, 400, "exactly one"),
        ({"vec": [1.0] * 8}, 400, "unknown field"),
    ],
)
def test_bad_requests_get_4xx_with_message(service, body, status, message):
    server = service[0]
    got, out = _call(server.url + "/search", body)
    assert got == status and message in out["error"]


def test_malformed_json_and_unknown_path(service):
    server = service[0]
    req = urllib.request.Request(server.url + "/search", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and "not valid JSON" in json.loads(e.value.read())["error"]
    assert _call(server.url + "/other")[0] == 404


def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_reload_on_swap_and_corrupted_swap_keeps_serving(service):
    server, items, users, tmp = service
    old = server.watcher.loaded.version
    # New day with different ids: the service must switch to it.
    make_table(tmp / "item_ir", [f"n{j}" for j in range(300)], items, ds="2026-01-03")
    new = build_index(tmp / "item_ir", "2026-01-03", tmp / "idx", CFG).version
    assert _wait_for(lambda: server.watcher.loaded.version == new)
    status, out = _call(server.url + "/search", {"user_id": "u1", "k": 3})
    assert status == 200 and out["index_version"] == new and all(i.startswith("n") for i in out["ids"])
    # A corrupted version made current: logged, the previous index keeps serving.
    bad = store.new_version("2026-01-04")
    (tmp / "idx" / bad).mkdir()
    for f in ("manifest.json", "ids.parquet"):
        (tmp / "idx" / bad / f).write_bytes((tmp / "idx" / new / f).read_bytes())
    (tmp / "idx" / bad / "index.faiss").write_bytes(b"not an index")
    store.set_current(tmp / "idx", bad)
    assert _wait_for(lambda: server.watcher.failed == bad)
    status, out = _call(server.url + "/search", {"user_id": "u1", "k": 3})
    assert status == 200 and out["index_version"] == new
    assert old != new
