"""The other commands: ``validate``, ``experiment``, ``extract probe`` and ``serve retrieval``."""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from contracts.example_config import EXAMPLES
from extract import probe_cli
from pipelines.cli_app import _CTX, CONFIG, LOG_FORMAT, ROOT, SET, LogFormat, _engines_output, _load, _output, app
from pipelines.cli_chain import _chain
from studies.names import Study

# what `validate --kind` checks: a whole RunConfig, or one section's example file
Kind = Enum("Kind", {k: k for k in ["run", *(n.removesuffix(".yaml") for n in EXAMPLES)]}, type=str)  # type: ignore[misc]
KIND = typer.Option(
    "run",
    "--kind",
    help="run (a RunConfig: also checks its source log), or pretrain | extract | downstream | retrieval: "
    "a section file (default configs/<kind>.yaml) checked against its model only.",
)


@app.command()
def validate(
    config: Optional[Path] = CONFIG,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
    kind: Kind = KIND,
):
    """Check the config's source log (timestamps, duplicates, ids, labels, ...) without writing
    anything: exit 0 clean (warnings listed), 2 bad config, 5 a bad log (the line names file,
    column, row and value)."""
    from datasources import validate_source

    out = _output(log_format)
    kind = kind.value
    if kind != "run":  # one section's file (contracts/example_config.py): load it, nothing else
        from contracts import load_config
        from contracts.example_config import CONFIGS, model_class

        model = model_class(EXAMPLES[f"{kind}.yaml"].model)
        path = config or CONFIGS / f"{kind}.yaml"
        load_config(path, model)
        if out.fmt != "json":
            out.say(f"✓ {path} is a valid {model.__name__}", "green")
        out.result({"valid": True, "kind": kind, "config": str(path)})
        return
    cfg = _load(config, None, None, set_)
    from pipelines.steps import register_source_store

    register_source_store(cfg)
    report = validate_source(cfg.source)
    data = report.model_dump(mode="json") if hasattr(report, "model_dump") else report
    if out.fmt != "json":
        out.say(f"✓ {cfg.source.kind} source is valid", "green")
        for k, v in data.items() if isinstance(data, dict) else []:
            out.say(f"  {k}: {v}")
    out.result({"valid": True, "report": data})


EXPERIMENT_CONFIG = typer.Option(
    None, help="Transfer/RankUp study YAML (studies/; frozen ones in configs/studies/, docs/studies.md)."
)
OUT_DIR = typer.Option(None, "--out", help="Report folder (default ROOT/reports/experiments).")
WHICH = typer.Argument(..., help="transfer (the LFM4Ads transfer table) or rankup (the RankUp ablation).")


@app.command()
def experiment(
    which: Study = WHICH,
    config: Optional[Path] = CONFIG,
    root: Optional[Path] = ROOT,
    experiment_config: Optional[Path] = EXPERIMENT_CONFIG,
    seeds: Optional[int] = typer.Option(None, help="Seeds 0..N-1 (default: the experiment config's)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per fit (default: the experiment config's)."),
    out_dir: Optional[Path] = OUT_DIR,
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """Run an experiment on a run root; ingest, pretrain and extract run first if needed.

    With no --config it runs on configs/demo.yaml's generated log; any RunConfig (e.g.
    configs/movielens.yaml) runs it on that log. Exit 3 when a quality gate stops the
    extraction (as `run`). The last line printed is JSON."""
    from studies.run import brief, run_study

    out = _output(log_format)
    default = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = _load(config or default, root, None, set_)
    _engines_output(cfg)
    st = _chain(cfg, ["extract"], False, False, out)
    # the run config's resolved split (as step_downstream uses), not downstream's own day counts;
    # any text line of the study goes where the engines' noise goes (stderr: the log file), so
    # stdout holds the one result object, in text and json mode
    with contextlib.redirect_stdout(sys.stderr):
        res = run_study(
            which,
            Path(cfg.root),
            config=experiment_config,
            out=out_dir,
            seeds=seeds,
            epochs=epochs,
            split=st.split,
            checkpoint=st.checkpoint,
            expect_model_version=st.manifest.model_version if st.manifest else None,
        )
    out.say(f"report: {res['report_dir']}", "green")
    out.result(brief(which, res))


extract_app = typer.Typer(help="Extraction tools.")
app.add_typer(extract_app, name="extract")


@extract_app.command("probe")
def extract_probe(
    checkpoint: Path = probe_cli.CHECKPOINT,
    log: Path = probe_cli.LOG,
    train_days: str = probe_cli.TRAIN_DAYS,
    valid_days: Optional[str] = probe_cli.VALID_DAYS,
    scenario: Optional[int] = probe_cli.SCENARIO,
    out: Path = probe_cli.OUT,
    config: Optional[Path] = probe_cli.CONFIG,
    no_record: bool = probe_cli.NO_RECORD,
):
    """Score every candidate CR layer with a linear probe and record the best in the manifest
    (the same command as `python -m extract probe`)."""
    _output("text")
    probe_cli.probe(checkpoint, log, train_days, valid_days, scenario, out, config, no_record)


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
    log_format: LogFormat = LOG_FORMAT,
    set_: Optional[List[str]] = SET,
):
    """HTTP top-K service over the live index (reloads when CURRENT changes; API in docs/retrieval.md).
    Exit 2 when --user-table names a table that is not published (or an item table), 5 when the
    user table is unreadable or its model version or dim does not match the live index."""
    from contracts import ConfigError, InputError, RunLayout
    from engines.storage import mount_run
    from retrieval import serve
    from retrieval.http_served import ServiceStartError, resolve_user_table

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
