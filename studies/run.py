"""One study on a run root (log + tables [+ checkpoints]): what ``python -m studies
transfer|rankup`` and ``lfm4ads experiment`` call, with typed arguments."""

from __future__ import annotations

from pathlib import Path

from contracts import RunLayout, load_config, split_days
from studies.names import Study
from studies.rankup_ablation import RankUpExperimentConfig, run_rankup_experiment
from studies.transfer_config import TransferExperimentConfig
from studies.transfer_table import run_transfer_experiment

# the bulky part of each result, left out of the printed summary (it is in the JSON report)
BULKY = {Study.transfer: "table", Study.rankup: "variants"}


def study_config(which: Study, config: Path | None) -> TransferExperimentConfig | RankUpExperimentConfig:
    """The study's config from ``config`` (YAML; errors name the bad key), else its defaults."""
    model = TransferExperimentConfig if which == Study.transfer else RankUpExperimentConfig
    return load_config(config, model) if config else model()


def run_study(
    which: Study,
    root: Path,
    *,
    config: Path | None = None,
    out: Path | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    workers: int | None = None,
    valid_start: str | None = None,
    test_start: str | None = None,
    split: dict[str, list[str]] | None = None,
    checkpoint: str | Path | None = None,
    expect_model_version: str | None = None,
) -> dict:
    """Run ``which`` on the run root ``root``; returns its result plus ``report_dir``.

    ``seeds``: use seeds 0..N-1; ``epochs``, ``workers`` (transfer only) override the config.
    Days: ``split`` ({"train", "valid", "test"} -> days, what ``lfm4ads experiment`` passes:
    the run config's resolved split), else ``valid_start``/``test_start`` (train < valid
    start <= valid < test start <= test), else :class:`contracts.SplitConfig`'s defaults. ``checkpoint`` (default: the newest under ROOT/checkpoints) drives module
    level and the per-layer tables (published for the days the daily ``user_cr`` table has,
    up to the last test day)."""
    cfg = study_config(which, config)
    upd: dict = {}
    if seeds:
        upd["seeds"] = list(range(seeds))
    if epochs:
        upd["epochs"] = epochs
    if expect_model_version and cfg.downstream.expect_model_version is None:
        upd["expect_model_version"] = expect_model_version
    if upd:
        cfg = cfg.model_copy(update={"downstream": cfg.downstream.model_copy(update=upd)})
    if workers and which == Study.transfer:
        cfg = cfg.model_copy(update={"workers": workers})
    layout = RunLayout(root)
    if split is None and (valid_start or test_start):
        from datasources import log_days

        split = split_days(log_days(layout.log), valid_start=valid_start, test_start=test_start)
    days = {} if split is None else {f"{k}_days": list(split[k]) for k in ("train", "valid", "test")}
    out = out or layout.root / "reports" / "experiments"
    if isinstance(cfg, RankUpExperimentConfig):
        res = run_rankup_experiment(layout.log, layout.root, out, cfg, **days)
        return {**res, "report_dir": str(out)}
    if checkpoint is None:
        from pretrain import latest_checkpoint

        checkpoint = latest_checkpoint(layout.checkpoints)
    layer_roots = None
    if cfg.cr_layers:
        if checkpoint is None:
            raise ValueError(
                f"cr_layers {cfg.cr_layers}: per-layer tables need a checkpoint under {layout.checkpoints}"
            )
        from engines import delta_io
        from transfer import publish_layer_tables

        last = max((days.get("test_days") or [max(delta_io.list_days(layout.table("user_cr")))]))
        snap = [d for d in delta_io.list_days(layout.table("user_cr")) if d <= last]
        layer_roots = publish_layer_tables(layout.root, checkpoint, cfg.cr_layers, snap)
    res = run_transfer_experiment(
        layout.log, layout.root, out, cfg, checkpoint=checkpoint, layer_roots=layer_roots, **days
    )
    return {**res, "report_dir": str(out)}


def brief(which: Study, result: dict) -> dict:
    """The result without its bulky per-cell / per-variant part (what is printed)."""
    return {k: v for k, v in result.items() if k != BULKY[which]}
