"""The chain's commands: ``run``, ``stage``, ``backfill`` and ``ledger``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from pipelines.cli_app import (
    CONFIG,
    DS,
    FORCE,
    LOG_FORMAT,
    ROOT,
    SET,
    WAIT,
    LogFormat,
    _engines_output,
    _load,
    _output,
    app,
)
from pipelines.output import Output
from pipelines.steps import STEPS

# the steps as command-line choices (one list: pipelines.steps.STEPS)
Stage = Enum("Stage", {k: k for k in STEPS}, type=str)  # type: ignore[misc]
STAGE = typer.Argument(..., help="The step to run.")


def _chain(cfg, steps, force, wait, out: Output):
    """run_pipeline with a line per step (done in N s, or reused)."""
    from pipelines.run import run_pipeline

    def started(name: str, chain: list[str]) -> None:
        if out.fmt == "json":
            out.say(f"step {name} started", ds=cfg.ds, step=name, event="started")

    # in json mode run_pipeline's own log records (event done / reused) are the lines
    def finished(name: str, secs: float) -> None:
        if out.fmt != "json":
            out.say(f"✓ {name} ({secs:.1f}s)", "green")

    def reused(name: str) -> None:
        if out.fmt != "json":
            out.say(f"✓ {name} (reused)", "green")

    return run_pipeline(cfg, steps, force, wait=wait, on_step=finished, on_start=started, on_reuse=reused)


def _summary(cfg, st, out: Output) -> None:
    layout_root = Path(cfg.root)
    out.say(f"log:     {layout_root / 'log'}")
    out.say(f"tables:  {cfg.storage.tables_uri or layout_root / 'tables'}")
    out.say(f"indexes: {cfg.storage.index_uri or layout_root / 'indexes'}")
    if st.report:
        out.say(f"report:  {st.report}")
    if out.log_file:
        out.say(f"engine log: {out.log_file}")
    out.result(
        {
            "ds": st.ds,
            "timings": st.timings,
            "reused": st.reused,
            "report": str(st.report) if st.report else None,
            "downstream_lift": (st.downstream or {}).get("lift"),
            "recall": (st.index or {}).get("recall_at_k"),
        }
    )


@app.command()
def run(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    ds: Optional[str] = DS,
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """The whole chain for one ds: ingest, pretrain, extract+aggregate (gated), rollover, downstream,
    retrieval, report.

    Exit codes: 0 done, 2 bad config, 3 a quality gate stopped the run, 4 another run holds the root,
    5 a bad input file (named), 6 the rollover gate refused an alignment, 7 the new index was kept but
    not promoted, 130/143 interrupted (SIGINT/SIGTERM)."""
    out = _output(log_format)
    cfg = _load(config, root, ds, set_)
    _engines_output(cfg)
    _summary(cfg, _chain(cfg, None, force, wait, out), out)


@app.command()
def stage(
    name: Stage = STAGE,
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    ds: Optional[str] = DS,
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """One step alone; earlier steps it needs are reused from the run root (exit codes as `run`)."""
    out = _output(log_format)
    cfg = _load(config, root, ds, set_)
    _engines_output(cfg)
    _summary(cfg, _chain(cfg, [name.value], force, wait, out), out)


@app.command()
def backfill(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    start: str = typer.Option(..., "--from", help="First ds (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--to", help="Last ds (inclusive)."),
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """Run the chain for every day of the log in [--from, --to], in order.

    A day that cannot have a split yet (too few earlier days for split.valid_days +
    split.test_days, or none before split.valid_start) is skipped with a line saying so."""
    from contracts import ConfigError, SplitError
    from pipelines.run import run_pipeline

    out = _output(log_format)
    cfg = _load(config, root, None, set_)
    _engines_output(cfg)
    # ingest once (new days of the source), then the log's days decide what runs
    try:
        days = run_pipeline(cfg, ["ingest"], wait=wait).days
    except SplitError:  # the log's last day has no split: read the days ingest wrote anyway
        from contracts import RunLayout
        from datasources import log_days

        days = log_days(RunLayout(cfg.root).log)
    days = [d for d in days if start <= d <= end]
    if not days:
        raise ConfigError(f"no log days in {start}..{end} (--from/--to)")
    from contracts import RunLayout
    from datasources import log_days

    every_day = log_days(RunLayout(cfg.root).log)
    ran, skipped = [], []
    for d in days:
        try:
            cfg.split.resolve([x for x in every_day if x <= d])
        except SplitError as e:
            skipped.append(d)
            out.say(f"skip ds={d}: {e}", "yellow", ds=d, event="skipped", reason=str(e))
            continue
        out.say(f"ds={d}", "bold", ds=d, event="day")
        st = _chain(cfg.model_copy(update={"ds": d}), None, force, wait, out)
        ran.append(d)
        if st.report:
            out.say(f"report: {st.report}")
    if not ran:
        raise ConfigError(
            f"no day in {start}..{end} can have a split ({len(skipped)} skipped); "
            "the log needs more days, or change split"
        )
    out.result({"ran": ran, "skipped": skipped})


@app.command()
def ledger(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    ds: Optional[str] = DS,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """Show the run ledger (every step's status: running, done, failed, interrupted)."""
    from rich.console import Console
    from rich.table import Table

    from contracts import ConfigError
    from pipelines.ledger import Ledger

    out = _output(log_format)
    cfg = _load(config, root, None, set_)
    path = Path(cfg.root) / "ledger.sqlite"
    if not path.is_file():
        raise ConfigError(f"{path}: no ledger (has anything run with root {cfg.root}?)")
    rows = Ledger(path).rows(ds)
    if out.fmt == "json":
        for r in rows:
            out.result(r)
        return
    table = Table("ds", "step", "status", "started", "finished", "error")
    for r in rows:
        table.add_row(
            r["ds"], r["step"], r["status"], r["started_at"] or "", r["finished_at"] or "", (r["error"] or "")[:80]
        )
    Console().print(table)
