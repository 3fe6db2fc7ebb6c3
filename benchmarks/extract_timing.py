"""Where an extraction job's wall time goes: ``extract.extract_days`` run step by step
(``plan_job``, ``prepare_job``, ``run_job``, ``finish_job``) under the benchmark's clock,
with the actors' own timestamps (the rows :class:`extract.worker.ExtractWorker` returns).

The product returns what it did (rows, shards, health); the timing is the benchmark's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extract import ExtractConfig, ExtractResult


def timed_extract_days(
    checkpoint_dir: str | Path, log_path: str | Path, days: list[str], out_dirs: dict[str, Path], cfg: ExtractConfig
) -> tuple[dict[str, ExtractResult], dict, float]:
    """``extract_days`` with the same arguments and results, plus its phase profile
    (:func:`job_phases`; {} when every day was skipped) and the largest actor peak RSS (MB)."""
    from extract.job import finish_job, plan_job, prepare_job, run_job

    t0 = time.time()  # wall clock: the actors' timestamps are time.time() too
    job = plan_job(checkpoint_dir, log_path, days, out_dirs, cfg)
    prepare_job(job)
    t_run = time.time()
    run_job(job)
    t_ran = time.time()
    results = finish_job(job)
    t_end = time.time()
    phases = job_phases(t0, t_run, t_ran, t_end, packet_reports(job.reports)) if job.plans else {}
    return results, phases, max((float(r["peak_rss_mb"]) for r in job.reports), default=0.0)


def packet_reports(rows: list[dict]) -> list[dict]:
    """One report per packet (an actor returns one row per unit, the packet's fields
    repeated): its actor's pid and niceness and its wall-clock timestamps."""
    keys = ("pid", "nice", "t_init", "t_ready", "t_call", "t_done")
    return list({(r["pid"], r["t_call"]): {k: float(r[k]) for k in keys} for r in rows}.values())


def job_phases(t0: float, t_run: float, t_ran: float, t_end: float, reports: list[dict]) -> dict:
    """Where the call's wall time went (seconds, wall clock; actor times from its reports):
    plan (checks, footers, folders), Ray Data start until the first actor's constructor
    runs, the constructor (torch import, checkpoint load), the wait from a ready actor to its
    first packet, packets being processed (``busy``, summed over actors), the tail from the
    last packet to the job's last row, and finalising the days."""
    out = {"plan_s": t_run - t0, "run_s": t_ran - t_run, "finalise_s": t_end - t_ran, "total_s": t_end - t0}
    if reports:
        first = min(reports, key=lambda r: r["t_init"])
        out.update(
            to_actor_init_s=first["t_init"] - t_run,
            actor_init_s=first["t_ready"] - first["t_init"],
            ready_to_first_packet_s=min(r["t_call"] for r in reports) - first["t_ready"],
            busy_s=sum(r["t_done"] - r["t_call"] for r in reports),
            tail_s=t_ran - max(r["t_done"] for r in reports),
            actors=len({r["pid"] for r in reports}),
            actor_nice=int(max(r["nice"] for r in reports)),
        )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
