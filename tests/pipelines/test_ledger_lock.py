import multiprocessing as mp

import pytest

from pipelines.ledger import Ledger
from pipelines.lock import RunLocked, ds_lock


def test_ledger_records_and_reuses(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    assert led.done("2026-01-01", "pretrain", "h1") is None
    led.start("2026-01-01", "pretrain", "h1", {"days": ["a"]})
    assert led.done("2026-01-01", "pretrain", "h1") is None  # running is not done
    led.finish("2026-01-01", "pretrain", {"checkpoint": "/x"})
    assert led.done("2026-01-01", "pretrain", "h1") == {"checkpoint": "/x"}
    assert led.done("2026-01-01", "pretrain", "h2") is None  # another config redoes it
    led.start("2026-01-01", "extract", "h1", {})
    led.fail("2026-01-01", "extract", "boom")
    rows = {r["step"]: r for r in led.rows("2026-01-01")}
    assert rows["extract"]["status"] == "failed" and rows["extract"]["error"] == "boom"


def _hold(root, ready, release):
    with ds_lock(root, "2026-01-01"):
        ready.set()
        release.wait(10)


def test_second_run_of_a_ds_is_refused_and_lock_dies_with_holder(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    p.start()
    assert ready.wait(10)
    with pytest.raises(RunLocked, match=r"another run of ds=2026-01-01 is in progress \(pid \d+"):
        with ds_lock(tmp_path, "2026-01-01"):
            pass
    p.kill()  # SIGKILL: the kernel releases the lock
    p.join()
    with ds_lock(tmp_path, "2026-01-01"):
        pass


def test_step_hashes_follow_where_a_step_publishes(tmp_path):
    """Without a store the hashes are the plain cumulative hash of the config sections (a
    loop here, the reference), so existing ledgers keep theirs; a tables_uri redoes extract
    and every later step, an index_uri only retrieval and report."""
    import hashlib
    import json

    from pipelines import RunConfig
    from pipelines.step_records import step_hashes
    from tests.pipelines.test_run import TINY

    base = RunConfig.model_validate({**TINY, "root": str(tmp_path)})
    sections = [
        ("ingest", ["source"]),
        ("pretrain", ["split", "pretrain"]),
        ("extract", ["extract", "aggregate", "publish_every", "gates"]),
        ("rollover", ["rollover"]),
        ("downstream", ["downstream"]),
        ("retrieval", ["retrieval"]),
        ("report", []),
    ]
    dumped, acc, ref = base.model_dump(mode="json"), [], {}
    for step, keys in sections:
        acc += [json.dumps(dumped[k], sort_keys=True) for k in keys]
        ref[step] = hashlib.sha256("|".join(acc).encode()).hexdigest()[:16]
    h = step_hashes(base)
    assert h == ref

    def changed(storage: dict) -> set[str]:
        other = step_hashes(RunConfig.model_validate({**TINY, "root": str(tmp_path), "storage": storage}))
        return {k for k in h if other[k] != h[k]}

    later = {"extract", "rollover", "downstream", "retrieval", "report"}
    assert changed({"tables_uri": "s3://lfm-b/t"}) == later
    assert changed({"index_uri": "s3://lfm-b/i"}) == {"retrieval", "report"}
    assert changed({"options": {"AWS_REGION": "eu-west-1"}}) == set()  # where to, not how
    a = step_hashes(
        RunConfig.model_validate({**TINY, "root": str(tmp_path), "storage": {"tables_uri": "s3://lfm-b/t"}})
    )
    b = step_hashes(
        RunConfig.model_validate({**TINY, "root": str(tmp_path), "storage": {"tables_uri": "s3://lfm-b/u"}})
    )
    assert a["extract"] != b["extract"] and a["pretrain"] == b["pretrain"]
