"""The service across swaps and at start-up: reload on swap, a corrupted version ignored, a
model-version mismatch refused at a later swap (old pair keeps serving, /healthz says why)
and at start-up (refuses to start with one line), a wrong user table, and the CLI's exit codes."""

from __future__ import annotations

import time

import pytest

from contracts import IndexManifest
from pipelines.cli import cli
from retrieval import build_index, store
from retrieval.http_served import ServiceStartError
from retrieval.service import make_server
from tests.retrieval.helpers import clustered, make_table, numpy_topk
from tests.retrieval.test_service import CFG, DIM, DS, FAST, N_USERS, call, make_run, start

DS2 = "2026-01-03"


def _wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_reload_on_swap_and_corrupted_swap_keeps_serving(run):
    layout, items = run["layout"], run["items"]
    with start(run) as server:
        old = server.state.loaded.version
        # A new day with other item ids: the service must switch to it.
        make_table(layout.table("item_ir"), [f"n{j}" for j in range(len(items))], items, ds=DS2)
        new = build_index(layout.table("item_ir"), DS2, layout.indexes, CFG).version
        assert _wait_for(lambda: server.state.loaded.version == new)
        status, out = call(server.url + "/search", {"user_id": "u1", "k": 3})
        assert status == 200 and out["index_version"] == new and out["ds"] == DS2
        assert all(i.startswith("n") for i in out["ids"])
        # the fallback follows the new index's ds and item space (no n* item has positives)
        status, out = call(server.url + "/search", {"user_id": "nobody"})
        assert status == 404 and "no popularity fallback" in out["error"] and DS2 in out["error"]
        # A corrupted version made current: logged, the previous index keeps serving.
        bad = store.new_version("2026-01-04")
        (layout.indexes / bad).mkdir()
        for f in ("manifest.json", "ids.parquet"):
            (layout.indexes / bad / f).write_bytes((layout.indexes / new / f).read_bytes())
        (layout.indexes / bad / "index.faiss").write_bytes(b"not an index")
        store.set_current(layout.indexes, bad)
        assert _wait_for(lambda: server.state.failed == bad)
        status, out = call(server.url + "/search", {"user_id": "u1", "k": 3})
        assert status == 200 and out["index_version"] == new != old
        status, health = call(server.url + "/healthz")
        assert health["status"] == "degraded" and any(bad in p for p in health["problems"])


def test_model_version_mismatch_at_swap_keeps_old_pair_until_users_follow(run):
    layout, items, users = run["layout"], run["items"], run["users"]
    with start(run) as server:
        old = server.state.loaded.version
        make_table(layout.table("item_ir"), [f"i{j}" for j in range(len(items))], items, ds=DS2, model_version="m2")
        new = build_index(layout.table("item_ir"), DS2, layout.indexes, CFG).version
        assert _wait_for(lambda: "pair" in server.state.problems)
        status, health = call(server.url + "/healthz")
        problem = health["problems"][0]
        assert status == 200 and health["status"] == "degraded" and health["index_version"] == old
        assert new in problem and "'m2'" in problem and "'m1'" in problem and "user_query" in problem
        status, out = call(server.url + "/search", {"user_id": "u1", "k": 3})
        assert status == 200 and out["index_version"] == old and out["model_version"] == "m1"
        # the user table catches up: the new pair goes live together
        make_table(
            layout.table("user_query"),
            [f"u{j}" for j in range(N_USERS)],
            users,
            ds=DS2,
            name="user_ur",
            model_version="m2",
        )
        assert _wait_for(lambda: server.state.loaded.version == new)
        status, health = call(server.url + "/healthz")
        assert health["status"] == "ok" and health["model_version"] == "m2" and health["user_table"]["ds"] == DS2
        status, out = call(server.url + "/search", {"user_id": "u1", "k": 3})
        assert status == 200 and out["index_version"] == new and out["model_version"] == "m2"


def test_start_refused_on_model_version_or_dim_mismatch(tmp_path):
    run = make_run(tmp_path, user_mv="m9")
    layout = run["layout"]
    with pytest.raises(ServiceStartError) as e:
        make_server(layout.indexes, layout.table("user_query"), port=0, **FAST)
    assert e.value.exit_code == 5 and "refusing to start" in str(e.value) and "'m9'" in str(e.value)
    assert "\n" not in str(e.value)
    make_table(layout.table("user_wide"), ["u0", "u1"], run["users"][:2].repeat(2, axis=1), name="user_ur")
    with pytest.raises(ServiceStartError, match=f"has dim {DIM} but user table user_wide .* has dim {2 * DIM}"):
        make_server(layout.indexes, layout.table("user_wide"), port=0, **FAST)


def test_wrong_user_table_fails_to_start(run, tmp_path):
    layout = run["layout"]
    with pytest.raises(ServiceStartError) as e:
        make_server(layout.indexes, tmp_path / "nowhere", port=0, **FAST)
    assert e.value.exit_code == 2 and "no Delta table" in str(e.value)
    # not a representation table (the log): unreadable as user vectors -> bad input
    with pytest.raises(ServiceStartError) as e:
        make_server(layout.indexes, layout.log, port=0, **FAST)
    assert e.value.exit_code == 5 and str(layout.log) in str(e.value)


def test_cli_exit_codes_for_a_wrong_user_table_and_a_mismatch(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    root = str(run["layout"].root)
    assert cli(["serve", "retrieval", "--root", root, "--user-table", "user_nope", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--user-table user_nope: no published table" in err and "user_query" in err
    assert cli(["serve", "retrieval", "--root", root, "--user-table", "item_ir", "--port", "0"]) == 2
    assert "item table" in capsys.readouterr().err
    bad = make_run(tmp_path / "b", user_mv="m9")
    assert cli(["serve", "retrieval", "--root", str(bad["layout"].root), "--port", "0"]) == 5
    err = capsys.readouterr().err
    assert "refusing to start" in err and "'m9'" in err and "Traceback" not in err


def test_index_serves_the_user_partition_it_was_paired_with(run):
    """A version the paired query step built records query_table/query_ds: the service
    answers with that partition, not a newer one (e.g. of a tower the gate refused)."""
    if "query_ds" not in IndexManifest.model_fields:
        pytest.skip("the index manifest records no query partition")
    layout, items, users = run["layout"], run["items"], run["users"]
    mpath = layout.indexes / store.read_current(layout.indexes) / "manifest.json"
    m = IndexManifest.model_validate_json(mpath.read_text())
    mpath.write_text(m.model_copy(update={"query_table": "user_query", "query_ds": DS}).model_dump_json())
    newer = clustered(N_USERS, DIM, seed=7)  # a retrained tower's vectors, same model version
    make_table(layout.table("user_query"), [f"u{j}" for j in range(N_USERS)], newer, ds=DS2, name="user_ur")
    with start(run) as server:
        status, out = call(server.url + "/search", {"user_id": "u3", "k": 5})
        rows, _ = numpy_topk(items, users[3:4], 5)
        assert status == 200 and out["ids"] == [f"i{j}" for j in rows[0]]
        assert call(server.url + "/healthz")[1]["user_table"]["ds"] == DS


def test_cli_service_stopped_by_a_signal_exits_0(tmp_path):
    """SIGTERM / Ctrl-C is how a service ends: it drains and exits 0 (not 130/143 as a run)."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    run = make_run(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "retrieval",
            "--root",
            str(run["layout"].root),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return json.loads(r.read())["status"] == "ok"
            except OSError:
                return proc.poll() is not None  # exited early: fail below with its output

        assert _wait_for(healthy, timeout=120)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "retrieval service stopped" in err
