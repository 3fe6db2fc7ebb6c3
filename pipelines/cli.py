"""``lfm4ads``: the command line. Every command takes one YAML config (a RunConfig)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, help="lfm4ads: foundation-model representations for ads ranking and retrieval.")
console = Console(stderr=True)


def _load(config: Optional[Path], root: Optional[Path], ds: Optional[str]):
    from contracts import load_config, validate_config
    from pipelines.config import RunConfig

    over = {}
    if root:
        over["root"] = str(root)
    if ds:
        over["ds"] = ds
    if config is None:
        return validate_config(over, RunConfig, "<defaults>")
    return load_config(config, RunConfig, overrides=over)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts, level, logger, msg and the record's ``extra``
    fields (ds, step, event, seconds, ...), for log shippers."""

    _STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _run(config, root, ds, steps, force, wait: bool = False, log_format: str = "text") -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from contracts import ConfigError
    from pipelines.run import run_pipeline

    if log_format not in ("text", "json"):
        console.print(f"[red]--log-format must be text or json, got {log_format!r}[/red]")
        raise typer.Exit(2)
    setup_logging(log_format)
    try:
        cfg = _load(config, root, ds)
    except ConfigError as e:
        console.print(f"[red]config error[/red]\n{e}")
        raise typer.Exit(2)
    from pipelines.gates import GateFailed
    from engines.storage import StorageError
    from pipelines.lock import RunLocked
    from pipelines.preflight import InputFileError
    from pipelines.rollover import RolloverError

    # one bar over the chain's steps (rich draws it live on a terminal, and only the
    # finished lines in a log file)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    bar = {}

    def started(name: str, chain: list[str]) -> None:
        if "id" not in bar:
            bar["id"] = progress.add_task("chain", total=len(chain))
        progress.update(bar["id"], description=f"ds={cfg.ds or 'last'} step {name}")

    def finished(name: str, secs: float) -> None:
        progress.advance(bar["id"])
        progress.console.print(f"[green]✓[/green] {name} ({secs:.1f}s)")

    try:
        with progress:
            st = run_pipeline(cfg, steps, force, wait=wait, on_step=finished, on_start=started)
    except RunLocked as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(4)
    except StorageError as e:  # a missing bucket or unreachable store: a config problem
        console.print(f"[red]{e}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    except GateFailed as e:
        console.print(f"[red]{e}[/red]\nnothing of ds={e.ds} was published; report: {Path(cfg.root) / 'reports'}")
        raise typer.Exit(3)
    except InputFileError as e:
        console.print(f"[red]bad input file: {e}[/red]", soft_wrap=True)
        raise typer.Exit(5)
    except RolloverError as e:  # this version is published; its aligned tables were refused
        console.print(f"[red]rollover refused: {e}[/red]\nthe aligned tables keep their previous partition; "
                      f"report: {Path(cfg.root) / 'reports'}", soft_wrap=True)
        raise typer.Exit(6)
    layout_root = Path(cfg.root)
    console.print(f"log:     {layout_root / 'log'}")
    console.print(f"tables:  {cfg.storage.tables_uri or layout_root / 'tables'}")
    console.print(f"indexes: {cfg.storage.index_uri or layout_root / 'indexes'}")
    if st.report:
        console.print(f"report:  {st.report}")
    print(json.dumps({"ds": st.ds, "timings": st.timings, "report": str(st.report) if st.report else None,
                      "downstream_lift": (st.downstream or {}).get("lift"),
                      "recall": (st.index or {}).get("recall_at_k")}))


CONFIG = typer.Option(None, "--config", "-c", help="RunConfig YAML (see configs/).")
ROOT = typer.Option(None, "--root", help="Override the run root folder.")
DS = typer.Option(None, "--ds", help="The day to run for (default: the log's last day).")
FORCE = typer.Option(False, "--force", help="Redo finished work of the steps asked for.")
WAIT = typer.Option(False, "--wait", help="Wait for a concurrent run of the same root instead of exiting.")
LOG_FORMAT = typer.Option("text", "--log-format", help="text, or json (one object per line: ds, step, event, seconds).")


@app.command()
def run(config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT, ds: Optional[str] = DS, force: bool = FORCE,
        wait: bool = WAIT, log_format: str = LOG_FORMAT):
    """The whole chain for one ds: ingest, pretrain, extract+aggregate (gated), downstream, retrieval, report.

    Exit codes: 0 done, 2 bad config, 3 a quality gate stopped the run, 4 another run holds the root,
    5 an input file is truncated, replaced or unreadable (the message names it), 6 the rollover gate refused
    an alignment (this version is published; its aligned tables keep their previous partition)."""
    _run(config, root, ds, None, force, wait, log_format)


@app.command()
def stage(name: str, config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT, ds: Optional[str] = DS,
          force: bool = FORCE, wait: bool = WAIT, log_format: str = LOG_FORMAT):
    """One step alone (ingest, pretrain, extract, downstream, retrieval, report); earlier
    steps it needs are reused from the run root."""
    _run(config, root, ds, [name], force, wait, log_format)


@app.command()
def backfill(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    start: str = typer.Option(..., "--from", help="First ds (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--to", help="Last ds (inclusive)."),
    force: bool = FORCE,
):
    """Run the chain for every day of the log in [--from, --to], in order."""
    from datasources import log_days, materialize
    from contracts import RunLayout

    cfg = _load(config, root, None)
    materialize(cfg.source, RunLayout(cfg.root).log)
    days = [d for d in log_days(RunLayout(cfg.root).log) if start <= d <= end]
    if not days:
        console.print(f"[red]no log days in {start}..{end}[/red]")
        raise typer.Exit(2)
    for d in days:
        console.print(f"[bold]ds={d}[/bold]")
        _run(config, root, d, None, force)


@app.command()
def ledger(config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT, ds: Optional[str] = DS):
    """Show the run ledger (every step's status) of a run root."""
    from rich.table import Table

    from pipelines.ledger import Ledger

    cfg = _load(config, root, None)
    table = Table("ds", "step", "status", "started", "finished", "error")
    for r in Ledger(Path(cfg.root) / "ledger.sqlite").rows(ds):
        table.add_row(r["ds"], r["step"], r["status"], r["started_at"] or "", r["finished_at"] or "",
                      (r["error"] or "")[:80])
    Console().print(table)


@app.command()
def experiment(
    which: str = typer.Argument(..., help="transfer (the LFM4Ads transfer table) or rankup (the RankUp ablation)."),
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    experiment_config: Optional[Path] = typer.Option(None, help="Transfer/RankUp experiment YAML (downstream/experiments.py)."),
    seeds: Optional[int] = typer.Option(None, help="Seeds 0..N-1 (default: the experiment config's)."),
    epochs: Optional[int] = typer.Option(None),
    out: Optional[Path] = typer.Option(None, help="Report folder (default ROOT/reports/experiments)."),
):
    """Run an experiment on a run root; ingest, pretrain and extract run first if needed.

    With no --config it runs on the generated demo log; any RunConfig (e.g.
    configs/movielens.yaml) runs it on that log. The last line printed is JSON."""
    from downstream.experiments import main as experiments_main
    from pipelines.run import run_pipeline

    if which not in ("transfer", "rankup"):
        console.print("[red]which must be 'transfer' or 'rankup'[/red]")
        raise typer.Exit(2)
    cfg = _load(config or Path("configs/demo.yaml"), root, None)
    st = run_pipeline(cfg, ["extract"], on_step=lambda n, s: console.print(f"[green]✓[/green] {n} ({s:.1f}s)"))
    argv = [which, "--root", str(cfg.root)]
    for flag, value in (("--config", experiment_config), ("--seeds", seeds), ("--epochs", epochs), ("--out", out)):
        if value is not None:
            argv += [flag, str(value)]
    # the run config's resolved split (as step_downstream uses), not downstream's own day counts
    experiments_main(argv, split=st.split, checkpoint=st.checkpoint,
                     expect_model_version=st.manifest.model_version if st.manifest else None)


extract_app = typer.Typer(help="Extraction tools.")
app.add_typer(extract_app, name="extract")


@extract_app.command("probe", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def extract_probe(ctx: typer.Context):
    """Score every candidate CR layer with a linear probe and record the best in the manifest.

    Arguments as `python -m extract probe --help`."""
    from extract.probe import main as probe_main

    probe_main(list(ctx.args))


serve_app = typer.Typer(help="Long-running services.")
app.add_typer(serve_app, name="serve")


@serve_app.command("retrieval")
def serve_retrieval(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8080, help="Port."),
    user_table: str = typer.Option("user_ur", help="User table for queries by user id (user_ur or user_cr)."),
):
    """HTTP top-K service over the live index (reloads when CURRENT changes)."""
    from contracts import RunLayout
    from engines import delta_io
    from engines.storage import mount_run
    from retrieval import serve

    cfg = _load(config, root, None)
    layout = RunLayout(cfg.root)
    mount_run(cfg.storage, layout.root)  # tables / index in an object store: read them there
    users = layout.table(user_table)
    console.print(f"serving {layout.indexes} on http://{host}:{port}/search")
    serve(layout.indexes, users if delta_io.exists(users) else None, host, port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
