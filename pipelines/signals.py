"""SIGINT / SIGTERM stop a run within seconds, whatever engine is working.

Three libraries the chain uses take SIGINT for themselves: pyspark's SparkContext installs a
handler when it starts, and Ray Train's ``TorchTrainer.fit()`` installs one that only asks the
training run to abort gracefully, after which ``fit()`` returns and the chain went on to
publish every table (issue 16). SIGTERM had no handler at all, so the ledger stayed at
``running``. While :func:`handling` is active the lfm4ads handler stays installed (a library
asking for SIGINT/SIGTERM from the main thread is recorded, not installed) and a signal:

- cancels every Spark job of this process (``cancelAllJobs``), so a blocked ``collect``
  returns at once;
- raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread, which unwinds the
  running step: Ray ``get`` calls check for signals while they wait, py4j socket reads are
  interrupted, training loops stop at their next bytecode.

The caller (``run_pipeline``) marks the step ``interrupted`` in the ledger and the CLI shuts
Ray down (its local cluster, and with it the extraction actors and Ray Train workers) and
exits 128 + signal number (130 SIGINT, 143 SIGTERM). Publishing is one Delta commit per
table and day and the index swap one ``os.replace``: both are single calls that Python never
interrupts halfway, so a stop leaves each table and the index at a consistent version.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from contracts.errors import EXIT_SIGINT, EXIT_SIGTERM

_received: list[int] = []
_depth = [0]  # nested handling() blocks (the CLI's around run_pipeline's) install once


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM (``signum``); nothing partial was published."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT


def received() -> int | None:
    """The first signal received while :func:`handling` was active, if any."""
    return _received[0] if _received else None


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived (for loops that swallow exceptions)."""
    if _received:
        raise Interrupted(_received[0])


def _cancel_spark() -> None:
    from engines import spark_session

    session = spark_session._SESSION
    if session is None:
        return
    try:
        session.sparkContext.cancelAllJobs()
    except Exception:  # noqa: BLE001 - the JVM may already be gone; stopping matters, not this
        pass


_deferring = [0]


def _handler(signum, frame) -> None:
    first = not _received
    _received.append(signum)
    if first:
        # off the main thread: the main thread may be the one blocked in a py4j call
        threading.Thread(target=_cancel_spark, daemon=True).start()
    if not _deferring[0]:
        raise Interrupted(signum)


@contextmanager
def deferred():
    """A block a signal must not cut in half (launching Spark's JVM: stopped midway, the JVM
    outlives this process): a signal inside it is raised when the block ends."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    check()


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PAUSE_ENV = "LFM4ADS_PAUSE_IN_STEP"


def pause_point(step: str) -> None:
    """Fault-injection hook for the interrupt tests: when ``$LFM4ADS_PAUSE_IN_STEP`` names
    ``step``, wait here (up to 10 minutes, a signal ends the wait) once the step is marked
    running, so a test can deliver SIGINT/SIGTERM inside any step. Unset: returns at once.
    Its counterpart for SIGKILL, reachable from every stage, is
    :func:`engines.fault_points.fault_point` (``$LFM4ADS_KILL_AT``)."""
    import logging
    import os
    import time

    if os.environ.get(PAUSE_ENV) != step:
        return
    logging.getLogger("lfm4ads").info(
        "step %s paused for a signal ($%s)", step, PAUSE_ENV, extra={"step": step, "event": "paused"}
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        check()
        time.sleep(0.1)


@contextmanager
def handling():
    """Install the stop handlers (main thread only; elsewhere a no-op) for the block's
    duration, keeping them installed against libraries that install their own."""
    if threading.current_thread() is not threading.main_thread() or _depth[0]:
        yield  # off the main thread signals cannot be handled; nested: the outer block handles them
        return
    _depth[0] = 1
    _received.clear()
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    real_signal = signal.signal
    foreign: dict[int, object] = {}

    def guarded(signum, handler):
        # pyspark and Ray Train call signal.signal(SIGINT, ...) from the main thread; keep ours
        if signum in _SIGNALS and threading.current_thread() is threading.main_thread():
            old = foreign.get(signum, _handler)
            foreign[signum] = handler
            return old
        return real_signal(signum, handler)

    for s in _SIGNALS:
        real_signal(s, _handler)
    signal.signal = guarded
    try:
        yield
    finally:
        _depth[0] = 0
        if signal.signal is guarded:
            signal.signal = real_signal
        for s, h in previous.items():
            real_signal(s, h if h is not None else signal.SIG_DFL)
