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


def _run(config, root, ds, steps, force) -> None:
    from contracts import ConfigError
    from pipelines.run import run_pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = _load(config, root, ds)
    except ConfigError as e:
        console.print(f"[red]config error[/red]\n{e}")
        raise typer.Exit(2)
    with console.status("running") as status:
        st = run_pipeline(cfg, steps, force, on_step=lambda n, s: console.print(f"[green]✓[/green] {n} ({s:.1f}s)"))
    layout_root = Path(cfg.root)
    console.print(f"log:     {layout_root / 'log'}")
    console.print(f"tables:  {layout_root / 'tables'}")
    console.print(f"indexes: {layout_root / 'indexes'}")
    if st.report:
        console.print(f"report:  {st.report}")
    print(json.dumps({"ds": st.ds, "timings": st.timings, "report": str(st.report) if st.report else None,
                      "downstream_lift": (st.downstream or {}).get("lift"),
                      "recall": (st.index or {}).get("recall_at_k")}))


CONFIG = typer.Option(None, "--config", "-c", help="RunConfig YAML (see configs/).")
ROOT = typer.Option(None, "--root", help="Override the run root folder.")
DS = typer.Option(None, "--ds", help="The day to run for (default: the log's last day).")
FORCE = typer.Option(False, "--force", help="Redo finished work of the steps asked for.")


@app.command()
def run(config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT, ds: Optional[str] = DS, force: bool = FORCE):
    """The whole chain for one ds: ingest, pretrain, extract+aggregate, downstream, retrieval, report."""
    _run(config, root, ds, None, force)


@app.command()
def stage(name: str, config: Optional[Path] = CONFIG, root: Optional[Path] = ROOT, ds: Optional[str] = DS,
          force: bool = FORCE):
    """One step alone (ingest, pretrain, extract, downstream, retrieval, report); earlier
    steps it needs are reused from the run root."""
    _run(config, root, ds, [name], force)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
