"""``lfm4ads``: the command line. Every command takes one YAML config (a RunConfig).

Exit codes (contracts/errors.py, the same for every command): 0 done, 1 an unexpected error,
2 bad config, 3 a quality gate stopped the day, 4 another run holds the run root, 5 a bad
input file, 6 the rollover gate refused, 7 a new index version was kept but not promoted,
130/143 stopped by SIGINT/SIGTERM. An error is one line; ``--debug`` adds the traceback.

Environment: ``LFM4ADS_CONFIG`` (default ``--config``), ``LFM4ADS_ROOT`` (``--root``),
``LFM4ADS_LOG_FORMAT`` (``--log-format``), ``LFM4ADS_DEBUG=1`` (``--debug``),
``LFM4ADS_SPARK_MASTER`` (Spark master when the config names none),
``LFM4ADS_RAY_WORKER_NICENESS`` (nice level of Ray workers, default 0).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import click
import typer

from pipelines.output import JsonFormatter, Output  # noqa: F401 - JsonFormatter re-exported

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="lfm4ads: foundation-model representations for ads ranking and retrieval.",
)

# state of the command being run (one per process): its output, --debug, whether fd 2 may
# be redirected (only in the real entry point, never inside a test's process)
_CTX: dict = {"out": None, "debug": False, "redirect": False}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lfm4ads")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"lfm4ads {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="LFM4ADS_DEBUG",
        help="Show tracebacks and every library's output (no log-file redirect).",
    ),
):
    """lfm4ads: foundation-model representations for ads ranking and retrieval."""
    _CTX["debug"] = debug


def _output(log_format: str = "text") -> Output:
    if log_format not in ("text", "json"):
        raise click.BadParameter(f"must be text or json, got {log_format!r}", param_hint="--log-format")
    out = Output(log_format, _CTX["debug"])
    _CTX["out"] = out
    return out


def _load(config: Optional[Path], root: Optional[Path], ds: Optional[str] = None, sets: Optional[list] = None):
    """The RunConfig: the file's relative paths resolve against the file; ``--root`` (relative
    to the working directory), ``--ds`` and ``--set key.path=value`` override it."""
    from pipelines.config import load_run_config

    over = {}
    if root:
        over["root"] = str(Path(root).resolve())
    if ds:
        over["ds"] = ds
    return load_run_config(config, over, list(sets or []))


def _engines_output(cfg) -> None:
    """From here on the engines may start: their noise goes to the run's log file."""
    _CTX["out"].keep_noise_in(cfg.root, redirect_fd=_CTX["redirect"])


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


CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    envvar="LFM4ADS_CONFIG",
    help="RunConfig YAML (see configs/); its relative paths resolve against the file.",
)
ROOT = typer.Option(None, "--root", envvar="LFM4ADS_ROOT", help="Override the run root folder.")
DS = typer.Option(None, "--ds", help="The day to run for (default: the log's last day).")
FORCE = typer.Option(False, "--force", help="Redo finished work of the steps asked for.")
WAIT = typer.Option(False, "--wait", help="Wait for a concurrent run of the same root instead of exiting.")
LOG_FORMAT = typer.Option(
    "text",
    "--log-format",
    envvar="LFM4ADS_LOG_FORMAT",
    help="text, or json (one object per line: ts, level, ds, step, event, seconds).",
)
SET = typer.Option(
    None,
    "--set",
    metavar="KEY.PATH=VALUE",
    help="Override one config key (repeatable), e.g. --set pretrain.train.epochs=1.",
)


@app.command()
def run(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    ds: Optional[str] = DS,
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: str = LOG_FORMAT,
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
    name: str = typer.Argument(..., help="ingest, pretrain, extract, rollover, downstream, retrieval or report."),
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    ds: Optional[str] = DS,
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: str = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """One step alone; earlier steps it needs are reused from the run root (exit codes as `run`)."""
    from contracts import ConfigError
    from pipelines.run import STEPS

    out = _output(log_format)
    if name not in STEPS:
        raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STEPS)}")
    cfg = _load(config, root, ds, set_)
    _engines_output(cfg)
    _summary(cfg, _chain(cfg, [name], force, wait, out), out)


@app.command()
def backfill(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    start: str = typer.Option(..., "--from", help="First ds (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--to", help="Last ds (inclusive)."),
    force: bool = FORCE,
    wait: bool = WAIT,
    log_format: str = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """Run the chain for every day of the log in [--from, --to], in order.

    A day that cannot have a split yet (too few earlier days for split.valid_days +
    split.test_days, or none before split.valid_start) is skipped with a line saying so."""
    from contracts import ConfigError
    from pipelines.config import SplitError
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
    log_format: str = LOG_FORMAT,
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


@app.command()
def validate(config: Optional[Path] = CONFIG, log_format: str = LOG_FORMAT, set_: Optional[List[str]] = SET):
    """Check the config's source log (timestamps, duplicates, ids, labels, ...) without writing
    anything: exit 0 clean (warnings listed), 2 bad config, 5 a bad log (the line names file,
    column, row and value)."""
    from datasources import validate_source

    out = _output(log_format)
    cfg = _load(config, None, None, set_)
    from pipelines.run import register_source_store

    register_source_store(cfg)
    report = validate_source(cfg.source)
    data = report.model_dump(mode="json") if hasattr(report, "model_dump") else report
    if out.fmt != "json":
        out.say(f"✓ {cfg.source.kind} source is valid", "green")
        for k, v in data.items() if isinstance(data, dict) else []:
            out.say(f"  {k}: {v}")
    out.result({"valid": True, "report": data})


EXPERIMENT_CONFIG = typer.Option(None, help="Transfer/RankUp experiment YAML (downstream/experiments.py).")
OUT_DIR = typer.Option(None, "--out", help="Report folder (default ROOT/reports/experiments).")


@app.command()
def experiment(
    which: str = typer.Argument(..., help="transfer (the LFM4Ads transfer table) or rankup (the RankUp ablation)."),
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    experiment_config: Optional[Path] = EXPERIMENT_CONFIG,
    seeds: Optional[int] = typer.Option(None, help="Seeds 0..N-1 (default: the experiment config's)."),
    epochs: Optional[int] = typer.Option(None),
    out_dir: Optional[Path] = OUT_DIR,
    log_format: str = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """Run an experiment on a run root; ingest, pretrain and extract run first if needed.

    With no --config it runs on configs/demo.yaml's generated log; any RunConfig (e.g.
    configs/movielens.yaml) runs it on that log. Exit 3 when a quality gate stops the
    extraction (as `run`). The last line printed is JSON."""
    from contracts import ConfigError
    from downstream.experiments import main as experiments_main

    out = _output(log_format)
    if which not in ("transfer", "rankup"):
        raise ConfigError(f"experiment: which must be 'transfer' or 'rankup', got {which!r}")
    default = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = _load(config or default, root, None, set_)
    _engines_output(cfg)
    st = _chain(cfg, ["extract"], False, False, out)
    argv = [which, "--root", str(cfg.root)]
    for flag, value in (("--config", experiment_config), ("--seeds", seeds), ("--epochs", epochs), ("--out", out_dir)):
        if value is not None:
            argv += [flag, str(value)]
    # the run config's resolved split (as step_downstream uses), not downstream's own day counts;
    # the experiment's own text lines go where the engines' noise goes (stderr: the log file), so
    # stdout holds the one result object, in text and json mode
    with contextlib.redirect_stdout(sys.stderr):
        res = experiments_main(
            argv,
            split=st.split,
            checkpoint=st.checkpoint,
            expect_model_version=st.manifest.model_version if st.manifest else None,
        )
    out.say(f"report: {res['report_dir']}", "green")
    out.result({k: v for k, v in res.items() if k not in ("table", "variants")})


extract_app = typer.Typer(help="Extraction tools.")
app.add_typer(extract_app, name="extract")


@extract_app.command("probe", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def extract_probe(ctx: typer.Context):
    """Score every candidate CR layer with a linear probe and record the best in the manifest.

    Arguments as `python -m extract probe --help`."""
    from extract.probe import main as probe_main

    _output("text")
    probe_main(list(ctx.args))


serve_app = typer.Typer(help="Long-running services.")
app.add_typer(serve_app, name="serve")


@serve_app.command("retrieval")
def serve_retrieval(
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8080, help="Port."),
    user_table: Optional[str] = typer.Option(
        None,
        help="User table for queries by user id (user_query, user_ur or user_cr); default user_query "
        "when published, else user_ur.",
    ),
    max_k: int = typer.Option(1000, help="Largest k a request may ask for."),
    request_timeout: float = typer.Option(10.0, help="Seconds a request (headers, body, answer: each) may take."),
    log_format: str = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """HTTP top-K service over the live index (reloads when CURRENT changes; API in docs/retrieval.md).
    Exit 2 when --user-table names a table that is not published (or an item table), 5 when the
    user table is unreadable or its model version or dim does not match the live index."""
    from contracts import ConfigError, InputError, RunLayout
    from engines.storage import mount_run
    from retrieval import serve
    from retrieval.http_state import ServiceStartError, resolve_user_table

    out = _output(log_format)
    cfg = _load(config, root, None, set_)
    layout = RunLayout(cfg.root)
    mount_run(cfg.storage, layout.root)  # tables / index in an object store: read them there
    try:
        users = resolve_user_table(layout.root / "tables", user_table)
        out.say(
            f"serving {layout.indexes} on http://{host}:{port}/search"
            f" (user table {users[0] if users else 'none: popularity only'})"
        )
        serve(
            layout.indexes,
            users and users[1],
            host,
            port,
            log_path=layout.log,
            user_table_name=users and users[0],
            max_k=max_k,
            head_timeout_s=request_timeout,
            body_timeout_s=request_timeout,
            request_timeout_s=request_timeout,
        )
    except KeyboardInterrupt:  # SIGINT/SIGTERM is how a service ends (drained): exit 0
        pass
    except ServiceStartError as e:  # refused to start: one line, exit 2 (config) or 5 (input)
        raise (ConfigError if e.exit_code == 2 else InputError)(str(e)) from None
    _CTX["service_stopped"] = True
    out.say("retrieval service stopped")


def cli(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (errors mapped by :mod:`pipelines.exits`)."""
    from pipelines import signals
    from pipelines.exits import classify

    _CTX.update(out=None, debug=False, service_stopped=False)
    try:
        with signals.handling():  # SIGINT/SIGTERM -> Interrupted in any command (exit 130/143)
            rv = app(args=argv, prog_name="lfm4ads", standalone_mode=False)
        if signals.received() is not None and not _CTX.get("service_stopped"):  # typer: a bare 130
            raise signals.Interrupted(signals.received())
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:  # usage errors: unknown option, missing --from, ...
        e.show(file=(_CTX["out"].stderr if _CTX["out"] else None))
        return 2
    except BaseException as e:  # noqa: BLE001 - every error ends in a documented exit code
        if isinstance(e, click.exceptions.Abort) and isinstance(e.__cause__, KeyboardInterrupt):
            e = e.__cause__  # click turns Ctrl-C into Abort
        if isinstance(e, SystemExit):
            raise
        code, kind, msg = classify(e)
        out = _CTX["out"] or Output("text", _CTX["debug"])
        _log_traceback(e)
        where = f" (details: {out.log_file})" if out.log_file and code not in (2, 4) else ""
        hint = "" if _CTX["debug"] or code != 1 else "; run with --debug for the traceback"
        out.error(f"{kind}: {msg}{hint}{where}", event="error", exit_code=code, error=type(e).__name__)
        if _CTX["debug"]:
            traceback.print_exception(e, file=out.stderr)
        return code
    finally:
        _shutdown_engines()
        if _CTX["out"] is not None:
            _CTX["out"].close()


def _log_traceback(e: BaseException) -> None:
    import logging

    # the log file (when open) keeps the traceback; the person sees one line
    logging.getLogger("lfm4ads.cli.traceback").debug("command failed", exc_info=e)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.stream.write("".join(traceback.format_exception(e)))
            h.flush()


def _shutdown_engines() -> None:
    """After an interrupt or error, stop this process's engines so no Ray actor or Spark
    job keeps running (a local Ray cluster's workers go with ``ray.shutdown``)."""
    from pipelines import signals

    if signals.received() is None:
        return
    if "ray" in sys.modules:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def main() -> None:
    """The ``lfm4ads`` console script (and ``python -m pipelines.cli``)."""
    _CTX["redirect"] = True
    sys.exit(cli())


if __name__ == "__main__":
    main()
