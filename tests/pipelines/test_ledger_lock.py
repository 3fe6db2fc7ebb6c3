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
