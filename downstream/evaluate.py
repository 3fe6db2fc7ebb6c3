"""``train_and_evaluate``: one scenario, vanilla vs transfer, test AUC per task over seeds."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from contracts import DatasetSpec, SplitConfig
from downstream.config import DownstreamConfig
from downstream.data import ScenarioData, load_scenario
from downstream.model import RankingModel
from downstream.train import FitResult, fit_scenario

PAIRS = (("user_ur", "item_ir"), ("user_cr", "item_cr"))


def crossed_pairs(reps: list[str], rep_dims: dict[str, int]) -> list[tuple[str, str]]:
    """(user, item) table pairs both in ``reps`` with equal dims."""
    return [(u, i) for u, i in PAIRS if u in reps and i in reps and rep_dims.get(u) == rep_dims.get(i)]


def ranking_builder(
    data: ScenarioData, cfg: DownstreamConfig, reps: list[str], adapter: str, crossed: bool | None = None
) -> Callable[[], nn.Module]:
    """Factory of the small ranking model using representations ``reps`` (empty = vanilla);
    ``crossed`` (default ``cfg.crossed_token``) adds the crossed tokens of joined pairs."""
    enc = data.encoder
    crossed = cfg.crossed_token if crossed is None else crossed
    pairs = crossed_pairs(reps, data.rep_dims) if crossed else []
    seq_field = enc.spec.sequence.item_field if cfg.use_sequence else None

    def build() -> nn.Module:
        return RankingModel(
            enc.vocab_sizes,
            len(enc.tasks),
            emb_dim=cfg.emb_dim,
            hidden=cfg.hidden,
            seq_field=seq_field,
            rep_dims={r: data.rep_dims[r] for r in reps},
            adapter=adapter,
            rep_norm=cfg.rep_norm,
            dropout=cfg.dropout,
            crossed_pairs=pairs,
            gate_mode=cfg.gate_mode,
            gate_bias=cfg.gate_bias,
            gate_zero_init=cfg.gate_zero_init,
            item_fields=["item_id", *enc.spec.item_features],
            emb_init_std=cfg.emb_init_std,
        )

    return build


def summarise(results: list[FitResult], tasks: list[str]) -> dict:
    """Mean and standard deviation over seeds of each task's test AUC, and of the
    validation AUC (the early-stopping metric, first task: what methods are chosen on)."""

    def stat(fn):
        out = {}
        for t in tasks:
            vals = [r.test_auc[t] for r in results if not math.isnan(r.test_auc[t])]
            out[t] = float(fn(vals)) if vals else float("nan")
        return out

    valid = [r.valid_auc for r in results if not math.isnan(r.valid_auc)]
    return {
        "valid_auc": float(np.mean(valid)) if valid else float("nan"),
        "valid_auc_std": float(np.std(valid, ddof=1)) if len(valid) > 1 else 0.0,
        "test_auc": stat(np.mean),
        "test_auc_std": stat(lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0),
        "per_seed": [
            {"test_auc": r.test_auc, "valid_auc": r.valid_auc, "epochs": r.epochs, "best_epoch": r.best_epoch}
            for r in results
        ],
    }


def run_seeds(build: Callable[[], nn.Module], data: ScenarioData, cfg: DownstreamConfig) -> dict:
    results = [fit_scenario(build, data, cfg, seed)[1] for seed in cfg.seeds]
    return summarise(results, data.tasks)


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_and_evaluate(
    log_path: str | Path,
    tables_root: str | Path | None,
    cfg: DownstreamConfig,
    train_days: list[str] | None = None,
    valid_days: list[str] | None = None,
    test_days: list[str] | None = None,
    spec: DatasetSpec | None = None,
    split: SplitConfig | None = None,
) -> dict:
    """Train the scenario model vanilla and with ``cfg.representations``; report test AUC.

    ``tables_root``: run root whose ``tables/<name>`` hold the published tables
    (:class:`contracts.RunLayout`). Days not given come from ``split`` (default
    ``SplitConfig()``, the run's default split) resolved on the log's days; ``spec``
    defaults to the one stored with the log. Returns a JSON-able dict::

        {"scenario", "rows": {train, valid, test}, "days": {...}, "tasks",
         "representations", "adapter", "coverage": {table: share of test rows found},
         "vanilla": {"test_auc": {task: mean}, "test_auc_std": {...}, "per_seed": [...]},
         "transfer": {... same ...}, "lift": {task: transfer - vanilla}}
    """
    from datasources import log_days, read_log_spec

    spec = spec or read_log_spec(log_path)
    if train_days is None or valid_days is None or test_days is None:
        parts = (split or SplitConfig()).resolve(log_days(log_path))
        tr, va, te = parts["train"], parts["valid"], parts["test"]
        train_days, valid_days, test_days = train_days or tr, valid_days or va, test_days or te
    scenario, data = load_scenario(
        log_path,
        tables_root,
        spec,
        cfg.scenario,
        cfg.sample_type,
        list(cfg.representations),
        train_days,
        valid_days,
        test_days,
        min_count=cfg.min_count,
        max_vocab=cfg.max_vocab,
        expect_dims=cfg.expect_dims,
        expect_model_version=cfg.expect_model_version,
    )
    with torch_threads(cfg.threads):
        return _vanilla_vs_transfer(data, cfg, spec, scenario, train_days, valid_days, test_days)


def _vanilla_vs_transfer(data, cfg, spec, scenario, train_days, valid_days, test_days) -> dict:
    vanilla = run_seeds(ranking_builder(data, cfg, [], "none"), data, cfg)
    out = {
        "scenario": scenario,
        "scenario_name": spec.scenarios.get(scenario, str(scenario)),
        "rows": {"train": data.train.num_rows, "valid": data.valid.num_rows, "test": data.test.num_rows},
        "days": {"train": train_days, "valid": valid_days, "test": test_days},
        "tasks": data.tasks,
        "representations": list(cfg.representations),
        "adapter": cfg.adapter,
        "coverage": data.coverage,
        "vanilla": vanilla,
    }
    if cfg.representations:
        transfer = run_seeds(ranking_builder(data, cfg, list(cfg.representations), cfg.adapter), data, cfg)
        out["transfer"] = transfer
        out["lift"] = {t: transfer["test_auc"][t] - vanilla["test_auc"][t] for t in data.tasks}
    return out
