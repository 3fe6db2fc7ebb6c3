"""``python -m studies transfer|rankup|rankup-defaults|ablation``: the studies' command line.

Every command but ``rankup-defaults`` (whose variants are its flags) takes a frozen config
(``--config configs/studies/<study>.yaml``, the file that reproduces the numbers in the
docs; docs/studies.md) and a few typed overrides, and calls the study's function directly.
The last stdout line is the result JSON.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional, get_args

import typer

from studies.names import Study
from studies.pretrain_ablation import VARIANTS, AblationConfig, DataName

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="The studies: the transfer table, the RankUp study, the RankUp defaults study, the pretraining ablation.",
)


# the ablation's logs and variants as command-line choices (one list each: AblationConfig's)
Data = Enum("Data", {k: k for k in get_args(DataName)}, type=str)
Variant = Enum("Variant", {k: k for k in VARIANTS}, type=str)

ROOT = typer.Option(..., "--root", help="Run root (RunLayout): log/, tables/, checkpoints/.")
OUT = typer.Option(None, "--out", help="Report folder (default ROOT/reports/experiments).")
SEEDS = typer.Option(None, "--seeds", help="Use seeds 0..N-1 (default: the config's).")
EPOCHS = typer.Option(None, "--epochs", help="Epochs per fit (default: the config's).")
VALID_START = typer.Option(None, "--valid-start", help="First validation day (YYYY-MM-DD); needs --test-start.")
TEST_START = typer.Option(None, "--test-start", help="First test day (YYYY-MM-DD); needs --valid-start.")
TRANSFER_CONFIG = typer.Option(
    None, "--config", help="TransferExperimentConfig YAML, e.g. configs/studies/transfer.yaml."
)
RANKUP_CONFIG = typer.Option(None, "--config", help="RankUpExperimentConfig YAML, e.g. configs/studies/rankup.yaml.")
ABLATION_CONFIG = typer.Option(
    None, "--config", help="AblationConfig YAML, e.g. configs/studies/pretrain_ablation_generated.yaml."
)
DATA = typer.Option(None, "--data", help="A generated log or MovieLens-100K.")
MOVIELENS = typer.Option(None, "--movielens", help="MovieLens-100K folder.")
VARIANT = typer.Option(None, "--variant", help="A variant to run (repeatable; default: the config's).")
DEFAULTS_VARIANT = typer.Option(
    None, "--variant", help='NAME=JSON: RankUpConfig overrides (repeatable; {"__rankmixer__": true} = RankMixer).'
)
DEFAULTS_OUT = typer.Option(None, "--out", help="Also write the results JSON here (after every variant).")
ABLATION_OUT = typer.Option(None, "--out", help="Also write {args, runs, summary} as JSON here (after every run).")


def _run(
    which: Study,
    root: Path,
    config: Path | None,
    out: Path | None,
    seeds: int | None,
    epochs: int | None,
    workers: int | None,
    valid_start: str | None,
    test_start: str | None,
) -> dict:
    """Run ``which`` (:func:`studies.run.run_study`); print the report folder and the result JSON."""
    from studies.run import brief, run_study

    res = run_study(
        which,
        root,
        config=config,
        out=out,
        seeds=seeds,
        epochs=epochs,
        workers=workers,
        valid_start=valid_start,
        test_start=test_start,
    )
    print(f"report: {res['report_dir']}")
    print(json.dumps(brief(which, {k: v for k, v in res.items() if k != "report_dir"}), default=float))
    return res


@app.command()
def transfer(
    root: Path = ROOT,
    config: Optional[Path] = TRANSFER_CONFIG,
    out: Optional[Path] = OUT,
    seeds: Optional[int] = SEEDS,
    epochs: Optional[int] = EPOCHS,
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes training cells in parallel."),
    valid_start: Optional[str] = VALID_START,
    test_start: Optional[str] = TEST_START,
) -> dict:
    """The LFM4Ads transfer table: vanilla vs feature, module and model level per scenario
    (transfer.md, transfer.json, transfer_auc.png; a killed run reuses its finished cells)."""
    return _run(Study.transfer, root, config, out, seeds, epochs, workers, valid_start, test_start)


@app.command()
def rankup(
    root: Path = ROOT,
    config: Optional[Path] = RANKUP_CONFIG,
    out: Optional[Path] = OUT,
    seeds: Optional[int] = SEEDS,
    epochs: Optional[int] = EPOCHS,
    valid_start: Optional[str] = VALID_START,
    test_start: Optional[str] = TEST_START,
) -> dict:
    """RankMixer vs each RankUp component alone vs full RankUp: AUC per task and effective
    rank per layer (rankup.md, rankup.json, rankup_erank.png)."""
    return _run(Study.rankup, root, config, out, seeds, epochs, None, valid_start, test_start)


@app.command("rankup-defaults")
def rankup_defaults(
    root: Path = ROOT,
    valid_start: str = typer.Option(..., "--valid-start", help="First validation day (YYYY-MM-DD)."),
    test_start: str = typer.Option(..., "--test-start", help="First test day (YYYY-MM-DD)."),
    seeds: int = typer.Option(3, "--seeds", help="Use seeds 0..N-1."),
    epochs: int = typer.Option(20, "--epochs", help="Epoch cap per fit."),
    patience: int = typer.Option(3, "--patience", help="Early-stopping patience (epochs)."),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(512, "--batch-size", help="Training batch size."),
    erank_rows: int = typer.Option(1024, "--erank-rows", help="Test rows the effective rank is averaged over."),
    variant: Optional[List[str]] = DEFAULTS_VARIANT,
    skip_defaults: bool = typer.Option(False, "--skip-defaults", help="Run only the --variant ones."),
    out: Optional[Path] = DEFAULTS_OUT,
) -> dict:
    """The RankUp defaults study (issue 15.6): named RankMixer / RankUp variants on every
    scenario pooled, validation AUC (the selection metric), test AUC and effective rank."""
    from studies.rankup_defaults import study

    return study(
        root,
        valid_start,
        test_start,
        seeds=seeds,
        epochs=epochs,
        patience=patience,
        lr=lr,
        batch_size=batch_size,
        erank_rows=erank_rows,
        variants=variant,
        skip_defaults=skip_defaults,
        out=out,
    )


@app.command()
def ablation(
    config: Optional[Path] = ABLATION_CONFIG,
    data: Optional[Data] = DATA,
    movielens: Optional[Path] = MOVIELENS,
    seeds: Optional[int] = SEEDS,
    days: Optional[int] = typer.Option(None, "--days", help="Generated log: days (the last one validates)."),
    rows_per_day: Optional[int] = typer.Option(None, "--rows-per-day", help="Generated log: rows per day."),
    data_seed: Optional[int] = typer.Option(None, "--data-seed", help="Generated log: the generator's seed."),
    epochs: Optional[int] = EPOCHS,
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads per run."),
    variant: Optional[List[Variant]] = VARIANT,
    out: Optional[Path] = ABLATION_OUT,
) -> dict:
    """The foundation-model ablation: validation AUC per task of every variant, mean and std
    over seeds (plain loop, one process)."""
    from contracts import load_config, validate_config
    from studies.pretrain_ablation import run_ablation

    over = {
        "data": data.value if data else None,
        "movielens": str(movielens) if movielens else None,
        "seeds": list(range(seeds)) if seeds else None,
        "days": days,
        "rows_per_day": rows_per_day,
        "data_seed": data_seed,
        "epochs": epochs,
        "threads": threads,
        "variants": [v.value for v in variant] if variant else None,
    }
    over = {k: v for k, v in over.items() if v is not None}
    cfg = load_config(config, AblationConfig, over) if config else validate_config(over, AblationConfig, "flags")
    return run_ablation(cfg, out)


def main(argv: list[str] | None = None):
    """Run one command in this process (tests, ``python -m studies``); returns its result."""
    return app(args=argv, prog_name="python -m studies", standalone_mode=False)
