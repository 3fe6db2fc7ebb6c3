"""The retrieval HTTP service on a real uvicorn server on loopback, over real FAISS indexes:
answers by user id and by vector (== numpy brute force), exclude_seen and the popularity
fallback (== a plain loop over the rows written to the log), every bad-input case as one
JSON error while the service keeps serving, /healthz (GET and HEAD), /metrics, the access log."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from contracts import DatasetSpec, RunLayout, SequenceSpec
from datasources.log_store import canonical_schema, write_log_day
from retrieval import RetrievalConfig, build_index
from retrieval.service import make_server
from tests.retrieval.helpers import clustered, make_table, numpy_topk

DS = "2026-01-02"
LOG_DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]  # the last one is after the index's ds
CFG = RetrievalConfig(k_values=[5], eval_queries=40)
N_ITEMS, N_USERS, DIM = 300, 20, 8
SPEC = DatasetSpec(
    name="svc",
    scenarios={0: "feed"},
    tasks=["click", "conversion"],
    sequence=SequenceSpec(item_field="item_id", max_len=4),
).canonical()
# fast, but generous enough for a loaded 2-core machine
FAST = {"poll_s": 0.05, "tables_poll_s": 0.1, "omp_threads": None, "head_timeout_s": 2.0, "body_timeout_s": 2.0}


def write_log(log_path: Path, rows: list[tuple[str, str, str, float, float | None]]) -> None:
    """rows: (user, item, ds, click, conversion or None) -> the canonical log, one commit per day."""
    for d in sorted({r[2] for r in rows}):
        day = [r for r in rows if r[2] == d]
        t = datetime.fromisoformat(d).replace(tzinfo=UTC)
        table = pa.table(
            {
                "user_id": [r[0] for r in day],
                "item_id": [r[1] for r in day],
                "event_time": pa.array([t] * len(day), pa.timestamp("us", tz="UTC")),
                "ds": [d] * len(day),
                "scenario": pa.array([0] * len(day), pa.int32()),
                "sample_type": ["ad"] * len(day),
                "click": pa.array([r[3] for r in day], pa.float32()),
                "conversion": pa.array([r[4] for r in day], pa.float32()),
                "hist_seq": [[] for _ in day],
            }
        )
        write_log_day(log_path, table.cast(canonical_schema(SPEC)), d, SPEC)


def log_rows(seed: int = 3) -> list[tuple[str, str, str, float, float | None]]:
    """Table users u*, log-only users n* (not in the user table), some items not in the index (x*)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in LOG_DAYS:
        for _ in range(400):
            user = f"u{rng.integers(N_USERS)}" if rng.random() < 0.7 else f"n{rng.integers(5)}"
            # a skewed catalogue so popularity has a clear head; 5% of events on items outside the index
            item = f"x{rng.integers(3)}" if rng.random() < 0.05 else f"i{min(int(rng.zipf(1.3)) - 1, N_ITEMS - 1)}"
            click = float(rng.random() < 0.3)
            conv = None if click == 0 and rng.random() < 0.5 else float(rng.random() < 0.2)
            rows.append((user, item, d, click, conv))
    return rows


def make_run(tmp: Path, user_mv: str = "m1") -> dict:
    """A run root: item_ir + user_query tables, the log, a live index."""
    layout = RunLayout(tmp)
    items, users = clustered(N_ITEMS, DIM, seed=1), clustered(N_USERS, DIM, seed=2)
    make_table(layout.table("item_ir"), [f"i{j}" for j in range(N_ITEMS)], items)
    make_table(
        layout.table("user_query"), [f"u{j}" for j in range(N_USERS)], users, name="user_ur", model_version=user_mv
    )
    rows = log_rows()
    write_log(layout.log, rows)
    build_index(layout.table("item_ir"), DS, layout.indexes, CFG)
    return {"layout": layout, "items": items, "users": users, "rows": rows}


def start(run: dict, **kw):
    layout = run["layout"]
    kw = {**FAST, **kw}
    return make_server(
        layout.indexes, layout.table("user_query"), port=0, log_path=layout.log, user_table_name="user_query", **kw
    ).start()


def call(url: str, body: dict | bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def positives(rows, upto: str) -> list[tuple[str, str]]:
    """(user, item) of rows on days <= upto with click = 1 (the log's first task), items of the index only."""
    return [(u, i) for u, i, d, c, v in rows if d <= upto and c == 1 and i.startswith("i")]


def interacted(rows, upto: str, user: str) -> set[str]:
    """Items of the index ``user`` has any row with on days <= upto."""
    return {i for u, i, d, c, v in rows if d <= upto and u == user and i.startswith("i")}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("svc"))
    server = start(run)
    yield server, run
    server.shutdown()
    server.server_close()


def test_by_vector_and_by_user_match_bruteforce(svc):
    server, run = svc
    items, users = run["items"], run["users"]
    status, out = call(server.url + "/search", {"vector": users[3].tolist(), "k": 7})
    rows, scores = numpy_topk(items, users[3:4], 7)
    assert status == 200 and out["ids"] == [f"i{j}" for j in rows[0]] and out["source"] == "vector"
    np.testing.assert_allclose(out["scores"], scores[0], rtol=1e-5)
    status, by_user = call(server.url + "/search", {"user_id": "u3", "k": 7})
    assert status == 200 and by_user["ids"] == out["ids"] and by_user["source"] == "user_query"
    assert by_user["index_version"] == server.state.loaded.version and by_user["ds"] == DS
    status, by_get = call(server.url + "/search?user_id=u3&k=7")
    assert status == 200 and by_get["ids"] == out["ids"]
    vec = ",".join(str(x) for x in users[3].tolist())
    assert call(server.url + f"/search?vector={vec}&k=7")[1]["ids"] == out["ids"]


def test_exclude_seen_drops_what_the_user_interacted_with_up_to_ds(svc):
    server, run = svc
    items, users = run["items"], run["users"]
    for user in ("u1", "u4"):
        seen = interacted(run["rows"], DS, user)
        assert seen, "the log has rows of this user"
        rows, _ = numpy_topk(items, users[int(user[1:])][None], N_ITEMS)
        want = [f"i{j}" for j in rows[0] if f"i{j}" not in seen][:10]
        status, out = call(server.url + "/search", {"user_id": user, "k": 10, "exclude_seen": True})
        assert status == 200 and out["ids"] == want and out["excluded"] == len(seen)


def test_unknown_user_gets_popularity_up_to_ds(svc):
    server, run = svc
    counts = Counter(i for _, i in positives(run["rows"], DS))  # day 2026-01-03 is after ds: not counted
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    status, out = call(server.url + "/search", {"user_id": "nobody", "k": 10})
    assert status == 200 and out["source"] == "popularity"
    assert out["ids"] == ranked[:10] and out["scores"] == [float(counts[i]) for i in ranked[:10]]
    # a user only the log knows: popularity minus what they engaged with
    seen = interacted(run["rows"], DS, "n2")
    status, out = call(server.url + "/search", {"user_id": "n2", "k": 10, "exclude_seen": True})
    assert status == 200 and out["source"] == "popularity"
    assert out["ids"] == [i for i in ranked if i not in seen][:10]
    status, health = call(server.url + "/healthz")
    assert health["fallback"]["items"] == len(counts) and health["fallback"]["log_days"] == 2


def test_unknown_user_without_fallback_is_404_naming_user_and_table(svc):
    server, _ = svc
    status, out = call(server.url + "/search", {"user_id": "nobody", "fallback": False})
    assert status == 404 and out["status"] == 404
    assert "'nobody'" in out["error"] and "user_query" in out["error"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"vector": [1.0, 2.0]}, 422, "vector: has 2 values, the live index has dim 8"),
        (b'{"vector": [1, 1, 1, NaN, 1, 1, 1, 1]}', 422, "vector: value nan at position 3 is not a finite number"),
        (b'{"vector": [1, 1, 1, 1, 1, 1, 1, -Infinity]}', 422, "value -inf at position 7"),
        (b'{"vector": [1, 1, 1, 1, 1, 1, 1, 1e999]}', 422, "value inf at position 7"),
        ({"vector": [1.0] * 7 + [1e39]}, 422, "overflows float32"),
        ({"vector": ["a"] * 8}, 422, "vector.0: Input should be a valid number"),
        ({"vector": [1.0] * 8, "k": 0}, 422, "k: Input should be greater than or equal to 1 (got 0)"),
        ({"vector": [1.0] * 8, "k": -3}, 422, "(got -3)"),
        ({"vector": [1.0] * 8, "k": N_ITEMS + 1}, 422, f"k: {N_ITEMS + 1} is above the index size ({N_ITEMS} items)"),
        ({"user_id": "u1", "k": 5000}, 422, "above the index size"),
        ({"vector": [1.0] * 8, "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"vector": [1.0] * 8, "k": 2.5}, 422, "k: Input should be a valid integer"),
        ({"vector": [1.0] * 8, "user_id": "u1"}, 422, "exactly one of 'user_id' or 'vector'"),
        ({}, 422, "exactly one of 'user_id' or 'vector'"),
        ({"vector": [1.0] * 8, "exclude_seen": True}, 422, "exclude_seen needs a user_id"),
        ({"vec": [1.0] * 8}, 422, "vec: unknown field"),
        ({"user_id": ""}, 422, "user_id: String should have at least 1 character"),
        (b"{nope", 400, "body is not valid JSON"),
        (b"[1, 2]", 422, "the body must be a JSON object"),
        (b"", 422, "a JSON body is required"),
    ],
)
def test_bad_input_is_one_json_error_and_service_keeps_serving(svc, body, status, message):
    server, _ = svc
    got, out = call(server.url + "/search", body)
    assert (got, out["status"]) == (status, status) and message in out["error"], out
    assert "\n" not in out["error"]
    assert call(server.url + "/search", {"user_id": "u1", "k": 3})[0] == 200


def test_bad_get_queries(svc):
    server, _ = svc
    assert call(server.url + "/search?user_id=u1&k=0")[0] == 422
    status, out = call(server.url + "/search?vector=1,2,x&k=3")
    assert status == 422 and "comma-separated numbers" in out["error"]
    status, out = call(server.url + "/search?vector=1,2&k=3")
    assert status == 422 and "has 2 values" in out["error"]


def test_healthz_get_and_head(svc):
    server = svc[0]
    status, health = call(server.url + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["problems"] == []
    assert health["num_items"] == N_ITEMS and health["users"] == N_USERS and health["model_version"] == "m1"
    assert health["user_table"]["name"] == "user_query"
    req = urllib.request.Request(server.url + "/healthz", method="HEAD")
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200 and r.read() == b"" and r.headers["Content-Type"] == "application/json"


def test_metrics_and_access_log(svc, caplog):
    server, _ = svc
    with caplog.at_level(logging.INFO, logger="retrieval.access"):
        call(server.url + "/search", {"user_id": "nobody", "k": 2})
        call(server.url + "/search", {"vector": [1.0], "k": 2})
        end = time.monotonic() + 10  # a line is written just after its answer went out

        def logged(status: int) -> bool:
            return any(
                f'"POST /search" {status}' in r.getMessage() for r in caplog.records if r.name == "retrieval.access"
            )

        while not (logged(200) and logged(422)) and time.monotonic() < end:
            time.sleep(0.01)
    assert logged(200) and logged(422)
    with urllib.request.urlopen(server.url + "/metrics", timeout=20) as r:
        text = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/plain")
    assert 'retrieval_http_requests_total{method="POST",route="/search",status="422"}' in text
    assert 'retrieval_answers_total{source="popularity"}' in text
    assert f"retrieval_index_items {float(N_ITEMS)}" in text
