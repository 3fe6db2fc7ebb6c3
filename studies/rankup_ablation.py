"""The RankUp study (issue 6): RankMixer vs each RankUp component alone vs full RankUp,
AUC per task and effective rank after the tokenizer and every mixer and FFN.

:func:`run_rankup_experiment` trains every variant of :func:`rankup_variants` on the same
data and seeds and writes the report (:func:`studies.reports.write_rankup_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import Field
from torch import nn

from contracts import DatasetSpec, StrictModel
from downstream.config import DownstreamConfig
from downstream.data import (
    ScenarioData,
    build_scenario_data,
    read_splits,
    rep_table_paths,
    resolve_scenario,
    select_rows,
)
from downstream.evaluate import summarise, torch_threads
from downstream.rankup import RankUpConfig, TokenMixerRanker, build_ranker
from downstream.train import FitResult, fit_scenario
from pretrain import effective_rank
from studies.days import study_days
from studies.reports import write_rankup_report


class RankUpExperimentConfig(StrictModel):
    """RankMixer vs RankUp components; ``model`` is full RankUp, the baseline derives from it."""

    downstream: DownstreamConfig = Field(
        default_factory=lambda: DownstreamConfig(seeds=[0, 1, 2, 3, 4]),
        description="Training settings; scenario None = every scenario pooled.",
    )
    model: RankUpConfig = Field(default_factory=RankUpConfig)
    erank_rows: int = Field(1024, ge=2, description="Test rows the effective rank is averaged over.")


def fit_seeds(
    build: Callable[[], nn.Module], data: ScenarioData, cfg: DownstreamConfig
) -> list[tuple[nn.Module, FitResult]]:
    """One early-stopped fit per seed of ``cfg.seeds``: ``[(model, FitResult)]``."""
    out: list[tuple[nn.Module, FitResult]] = []
    for seed in cfg.seeds:
        out.append(fit_scenario(build, data, cfg, seed))
    return out


def rankup_variants(full: RankUpConfig) -> dict[str, RankUpConfig]:
    """RankMixer, each RankUp component added alone, full RankUp (same T, D, L)."""
    shape = dict(
        emb_dim=full.emb_dim,
        d_model=full.d_model,
        num_tokens=full.num_tokens,
        num_layers=full.num_layers,
        ffn_mult=full.ffn_mult,
        permutation_seed=full.permutation_seed,
        crossed_pair=full.crossed_pair,
    )
    base = RankUpConfig.rankmixer(**shape)
    return {
        "rankmixer": base,
        "+permutation_split": base.model_copy(update={"split": "permutation"}),
        "+multi_embedding+global": base.model_copy(
            update={"num_embeddings": full.num_embeddings, "global_token": full.global_token}
        ),
        "+crossed_token": base.model_copy(update={"crossed_token": True}),
        "+task_tokens": base.model_copy(update={"task_tokens": True}),
        "+preln_swiglu": base.model_copy(update={"block": "rankup"}),
        "rankup": full,
    }


@torch.no_grad()
def erank_profile(model: TokenMixerRanker, data: ScenarioData, rows: int) -> dict[str, float]:
    """Effective rank (pretrain.effective_rank of each sample's T x D matrix) per layer."""
    model.eval()
    model.record_states = True
    n = min(rows, data.test.num_rows)
    model(data.test.take(torch.arange(n)))
    model.record_states = False
    return {name: effective_rank(x) for name, x in model.states}


def _crossed_pair(data: ScenarioData, wanted: tuple[str, str]) -> tuple[str, str] | None:
    for pair in (tuple(wanted), ("user_ur", "item_ir"), ("user_cr", "item_cr")):
        if all(p in data.rep_dims for p in pair) and data.rep_dims[pair[0]] == data.rep_dims[pair[1]]:
            return pair
    return None


def run_rankup_experiment(
    log_path: str | Path,
    tables_root: str | Path | None,
    out_dir: str | Path,
    cfg: RankUpExperimentConfig | None = None,
    *,
    spec: DatasetSpec | None = None,
    train_days: list[str] | None = None,
    valid_days: list[str] | None = None,
    test_days: list[str] | None = None,
) -> dict:
    """Run the RankUp study; write ``rankup.md``, ``rankup.json``, ``rankup_erank.png``
    into ``out_dir``. Returns ``{"dataset", "seeds", "rankmixer_auc", "rankup_auc",
    "rankmixer_erank_last", "rankup_erank_last", "variants"}`` (AUC = first task, mean
    over seeds; erank = mean over seeds after the last block)."""
    from datasources import read_log_spec

    cfg = cfg or RankUpExperimentConfig()
    dcfg = cfg.downstream
    spec = spec or read_log_spec(log_path)
    tr, va, te = study_days(log_path, train_days, valid_days, test_days)
    raw = read_splits(log_path, tr, va, te)
    scenario = None if dcfg.scenario is None else resolve_scenario(raw["train"], spec, dcfg.scenario)
    tables = {k: select_rows(v, scenario, dcfg.sample_type) for k, v in raw.items()}
    reps = list(dcfg.representations) if tables_root is not None else []
    data = build_scenario_data(
        tables,
        spec,
        rep_table_paths(tables_root, reps),
        min_count=dcfg.min_count,
        max_vocab=dcfg.max_vocab,
        expect_dims=dcfg.expect_dims,
        expect_model_version=dcfg.expect_model_version,
    )
    canon = spec.canonical()
    pair = _crossed_pair(data, cfg.model.crossed_pair)
    variants = rankup_variants(
        cfg.model.model_copy(update={"crossed_pair": pair} if pair else {"crossed_token": False})
    )
    if pair is None:
        variants.pop("+crossed_token")
    else:
        variants = {k: v.model_copy(update={"crossed_pair": pair}) for k, v in variants.items()}
    results: dict[str, dict] = {}
    with torch_threads(dcfg.threads):
        for name, vcfg in variants.items():

            def build(vcfg=vcfg) -> TokenMixerRanker:
                return build_ranker(vcfg, data, canon, dcfg.use_sequence)

            fitted = fit_seeds(build, data, dcfg)
            profiles = [erank_profile(m, data, cfg.erank_rows) for m, _ in fitted]
            summary = summarise([r for _, r in fitted], data.tasks)
            summary["erank"] = {k: float(np.mean([p[k] for p in profiles])) for k in profiles[0]}
            summary["params"] = sum(p.numel() for p in fitted[0][0].parameters())
            summary["config"] = vcfg.model_dump(mode="json")
            results[name] = summary
    click = data.tasks[0]
    last = lambda v: list(results[v]["erank"].values())[-1]  # noqa: E731
    result = {
        "dataset": spec.name,
        "seeds": list(dcfg.seeds),
        "scenario": scenario,
        "rows": {"train": data.train.num_rows, "valid": data.valid.num_rows, "test": data.test.num_rows},
        "rankmixer_auc": results["rankmixer"]["test_auc"][click],
        "rankup_auc": results["rankup"]["test_auc"][click],
        "rankmixer_erank_last": last("rankmixer"),
        "rankup_erank_last": last("rankup"),
        "crossed_pair": list(pair) if pair else None,
        "variants": results,
    }
    write_rankup_report(Path(out_dir), result, data.tasks)
    return result
