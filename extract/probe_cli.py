"""``lfm4ads extract probe`` and ``python -m extract probe``: one typer command for the layer
probe (:func:`extract.probe.probe_layers`), typed options; prints the result JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Extraction tools.")

CHECKPOINT = typer.Option(..., "--checkpoint", help="Checkpoint folder whose layers are probed (and recorded).")
LOG = typer.Option(..., "--log", help="The log (Delta table) the probe reads its rows from.")
OUT = typer.Option(..., "--out", help="Folder for probe.md, probe.png and probe.json.")
CONFIG = typer.Option(None, "--config", help="configs/extract.yaml (its probe: section); default ProbeConfig().")
TRAIN_DAYS = typer.Option(..., "--train-days", help="Comma-separated ds values the probe is fit on.")
SCENARIO = typer.Option(None, "--scenario", help="Scenario id; default every scenario pooled.")
NO_RECORD = typer.Option(False, "--no-record", help="Do not rewrite the manifest.")
VALID_DAYS = typer.Option(
    None,
    "--valid-days",
    "--test-days",
    help="Comma-separated ds values the layers are ranked on (validation); --test-days is its old name.",
)


@app.command("probe")
def probe(
    checkpoint: Path = CHECKPOINT,
    log: Path = LOG,
    train_days: str = TRAIN_DAYS,
    valid_days: Optional[str] = VALID_DAYS,
    scenario: Optional[int] = SCENARIO,
    out: Path = OUT,
    config: Optional[Path] = CONFIG,
    no_record: bool = NO_RECORD,
) -> dict:
    """Score every candidate CR layer with a linear probe and record the best in the manifest."""
    from contracts import load_config
    from extract.config import ExtractStageConfig, ProbeConfig
    from extract.probe import probe_layers

    if not valid_days:
        raise typer.BadParameter("--valid-days is required", param_hint="--valid-days")
    cfg = load_config(config, ExtractStageConfig).probe if config else ProbeConfig()
    if no_record:
        cfg = cfg.model_copy(update={"record": False})
    res = probe_layers(checkpoint, log, train_days.split(","), valid_days.split(","), scenario, out, cfg)
    print(json.dumps(res))
    return res


@app.callback()
def _group() -> None:
    """Extraction tools."""


def main(argv: list[str] | None = None) -> dict:
    """Run ``probe`` in this process (tests); ``argv`` starts with the options, as before."""
    return app(args=["probe", *(argv or [])], prog_name="python -m extract", standalone_mode=False)
