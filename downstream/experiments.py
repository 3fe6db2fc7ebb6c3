"""The two studies of issue 6, each returning a JSON dict and writing Markdown + PNGs.

- :func:`run_transfer_experiment`: per scenario, test AUC of vanilla vs feature-level
  (linear, gate, gate_linear; UR / UR+IR / UR+IR+CR) vs module-level (per k) vs
  model-level, mean and standard deviation over seeds.
- :func:`run_rankup_experiment`: RankMixer vs each RankUp component alone vs full RankUp,
  AUC per task and effective rank after the tokenizer and every mixer and FFN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from contracts import DatasetSpec, StrictModel
from downstream.config import DownstreamConfig, RepName
from downstream.data import (
    ScenarioData,
    build_scenario_data,
    read_splits,
    rep_table_paths,
    resolve_scenario,
    select_rows,
    split_days,
)
from downstream.evaluate import ranking_builder, summarise, torch_threads
from downstream.model import RetrievalRanker
from downstream.rankup import RankUpConfig, TokenMixerRanker
from downstream.train import FitResult, fit
from pretrain import effective_rank

ALL_REPS: list[str] = ["user_ur", "item_ir", "user_cr", "item_cr"]
REP_SETS: dict[str, list[str]] = {
    "UR": ["user_ur"],
    "UR+IR": ["user_ur", "item_ir"],
    "UR+IR+CR": ALL_REPS,
}


class TransferExperimentConfig(StrictModel):
    """Which methods the transfer table compares (training settings in ``downstream``)."""

    downstream: DownstreamConfig = Field(
        default_factory=lambda: DownstreamConfig(seeds=[0, 1, 2, 3, 4]),
        description="Training settings; its scenario/representations/adapter are ignored here.",
    )
    scenarios: list[int] | None = Field(None, description="Scenario ids; None = every scenario of the log.")
    adapters: list[str] = Field(
        default_factory=lambda: ["linear", "gate", "gate_linear"], description="Feature-level, with UR+IR+CR."
    )
    cross_adapters: list[str] = Field(
        default_factory=lambda: ["gate"], description="Feature-level with UR+IR+CR plus the crossed tokens."
    )
    rep_set_adapter: str = Field("gate", description="Adapter of the UR / UR+IR / UR+IR+CR comparison.")
    rep_sets: list[Literal["UR", "UR+IR", "UR+IR+CR"]] = Field(
        default_factory=lambda: list(REP_SETS), description="Which rows of that comparison to run."
    )
    module_k: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Module level: LFM layers copied.")
    model_level: bool = True
    model_level_user: RepName = Field("user_ur", description="User side of <A(r_u), IR(i)>.")
    cr_layers: list[str] | None = Field(
        None,
        description="Per-CR-layer rows (linear and gate, UR+IR+CR with that layer's CR tables, published "
        "into ROOT/layers/<layer> by transfer.publish_layer_tables); None = only the daily tables' layer.",
    )
    cr_layer_adapters: list[str] = Field(
        default_factory=lambda: ["linear", "gate"], description="Adapters of the per-CR-layer rows."
    )
    gate_variants: dict[str, dict] = Field(
        default_factory=dict,
        description="Extra rows: row name -> DownstreamConfig overrides, with UR+IR+CR unless the overrides "
        "set `representations` ([] = a vanilla variant), e.g. {'gate[cross]': {gate_mode: cross}}.",
    )


    @model_validator(mode="after")
    def _variants_valid(self) -> "TransferExperimentConfig":
        for name, over in self.gate_variants.items():
            try:
                DownstreamConfig.model_validate({**self.downstream.model_dump(), **over})
            except ValidationError as e:
                raise ValueError(f"gate_variants.{name}: {e}") from None
        return self


class RankUpExperimentConfig(StrictModel):
    """RankMixer vs RankUp components; ``model`` is full RankUp, the baseline derives from it."""

    downstream: DownstreamConfig = Field(
        default_factory=lambda: DownstreamConfig(seeds=[0, 1, 2, 3, 4]),
        description="Training settings; scenario None = every scenario pooled.",
    )
    model: RankUpConfig = Field(default_factory=RankUpConfig)
    erank_rows: int = Field(1024, ge=2, description="Test rows the effective rank is averaged over.")


# --- helpers ---------------------------------------------------------------------------
def _fit_seeds(build: Callable[[], nn.Module], data: ScenarioData, cfg: DownstreamConfig):
    out: list[tuple[nn.Module, FitResult]] = []
    for seed in cfg.seeds:
        out.append(
            fit(build, data.train, data.valid, data.test, data.tasks, seed=seed, epochs=cfg.epochs, lr=cfg.lr,
                batch_size=cfg.batch_size, patience=cfg.patience, weight_decay=cfg.weight_decay)
        )
    return out


def _days(log_path, cfg: DownstreamConfig, train_days, valid_days, test_days):
    from datasources import log_days

    if train_days and valid_days and test_days:
        return train_days, valid_days, test_days
    return split_days(log_days(log_path), cfg.valid_days, cfg.test_days)


def _pm(stat: dict, task: str) -> str:
    m, s = stat["test_auc"][task], stat["test_auc_std"][task]
    return "n/a" if math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def _pooled_std(a: dict, b: dict, task: str) -> float:
    return math.sqrt((a["test_auc_std"][task] ** 2 + b["test_auc_std"][task] ** 2) / 2)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the transfer table ----------------------------------------------------------------
def run_transfer_experiment(
    log_path: str | Path,
    tables_root: str | Path,
    out_dir: str | Path,
    cfg: TransferExperimentConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    spec: DatasetSpec | None = None,
    train_days: list[str] | None = None,
    valid_days: list[str] | None = None,
    test_days: list[str] | None = None,
    layer_roots: dict[str, Path] | None = None,
) -> dict:
    """Run the LFM4Ads transfer table; write ``transfer.md``, ``transfer.json`` and
    ``transfer_auc.png`` into ``out_dir``. Module level runs only with a ``checkpoint``.

    Days: pass all three (the run config's resolved split), else the time split of
    ``cfg.downstream`` (its last ``test_days`` / ``valid_days`` days). ``layer_roots``:
    CR layer -> run root of that layer's tables (:func:`transfer.publish_layer_tables`),
    one ``linear``/``gate`` row per layer.

    Returns ``{"dataset", "seeds", "scenarios", "scenarios_improved", "small_scenario",
    "vanilla_auc", "best_transfer_auc", "best_method", "lift", "table"}`` where the headline
    numbers are the click (first task) AUC of the smallest scenario, and ``table`` holds
    every scenario x method summary.
    """
    from datasources import read_log_spec

    cfg = cfg or TransferExperimentConfig()
    dcfg = cfg.downstream
    spec = spec or read_log_spec(log_path)
    tr, va, te = _days(log_path, dcfg, train_days, valid_days, test_days)
    raw = read_splits(log_path, tr, va, te)
    small = resolve_scenario(raw["train"], spec, None)
    scenarios = cfg.scenarios or sorted(int(s) for s in spec.scenarios)
    loaded = None
    if checkpoint is not None and cfg.module_k:
        from pretrain import load_checkpoint

        loaded = load_checkpoint(checkpoint, expect_spec=spec.canonical())
    rep_tables = rep_table_paths(tables_root, ALL_REPS)
    table: dict[str, dict] = {}
    with torch_threads(dcfg.threads):
        for s in scenarios:
            tables = {k: select_rows(v, resolve_scenario(raw["train"], spec, s), dcfg.sample_type) for k, v in raw.items()}
            if any(t.num_rows == 0 for t in tables.values()):
                table[str(s)] = {"skipped": "a split has no rows"}
                continue
            data = build_scenario_data(
                tables, spec, rep_tables, min_count=dcfg.min_count, max_vocab=dcfg.max_vocab,
                expect_dims=dcfg.expect_dims, expect_model_version=dcfg.expect_model_version,
            )
            tasks = data.tasks
            methods: dict[str, Callable[[], nn.Module]] = {"vanilla": ranking_builder(data, dcfg, [], "none")}
            for a in cfg.adapters:
                methods[f"{a}:UR+IR+CR"] = ranking_builder(data, dcfg, ALL_REPS, a, crossed=False)
            for a in cfg.cross_adapters:
                methods[f"{a}+cross:UR+IR+CR"] = ranking_builder(data, dcfg, ALL_REPS, a, crossed=True)
            for name in cfg.rep_sets:
                reps = REP_SETS[name]
                methods.setdefault(
                    f"{cfg.rep_set_adapter}:{name}", ranking_builder(data, dcfg, reps, cfg.rep_set_adapter, crossed=False)
                )
            for name, over in cfg.gate_variants.items():
                vcfg = DownstreamConfig.model_validate({**dcfg.model_dump(), **over})
                reps = list(vcfg.representations) if "representations" in over else ALL_REPS
                methods[name] = ranking_builder(data, vcfg, reps, vcfg.adapter if reps else "none")
            if cfg.model_level:
                methods["model:retrieval"] = lambda: RetrievalRanker(data.rep_dims, cfg.model_level_user, len(tasks))
            res = {m: summarise([r for _, r in _fit_seeds(b, data, dcfg)], tasks) for m, b in methods.items()}
            for layer, lroot in (layer_roots or {}).items():
                from transfer import layer_rep_paths

                ldata = build_scenario_data(
                    tables, spec, layer_rep_paths(tables_root, lroot, ALL_REPS), min_count=dcfg.min_count,
                    max_vocab=dcfg.max_vocab, expect_dims=dcfg.expect_dims,
                    expect_model_version=dcfg.expect_model_version,
                )
                for a in cfg.cr_layer_adapters:
                    b = ranking_builder(ldata, dcfg, ALL_REPS, a, crossed=False)
                    res[f"{a}:UR+IR+CR@{layer}"] = summarise([r for _, r in _fit_seeds(b, ldata, dcfg)], tasks)
            if loaded is not None:
                from transfer import isomorphic_from_checkpoint

                mdata = build_scenario_data(tables, spec, {}, encoder=loaded.encoder)
                for k in cfg.module_k:
                    b = lambda k=k: isomorphic_from_checkpoint(loaded, k, len(tasks))
                    res[f"module:k={k}"] = summarise([r for _, r in _fit_seeds(b, mdata, dcfg)], tasks)
            table[str(s)] = {
                "name": spec.scenarios.get(s, str(s)),
                "rows": {"train": data.train.num_rows, "valid": data.valid.num_rows, "test": data.test.num_rows},
                "coverage": data.coverage,
                "methods": res,
            }
            # written after every scenario: a long run that is stopped keeps what it measured
            result = _transfer_summary(table, spec, dcfg, scenarios, small, (tr, va, te))
            _write_transfer_report(Path(out_dir), result, spec, tasks_of(spec))
    result = _transfer_summary(table, spec, dcfg, scenarios, small, (tr, va, te))
    _write_transfer_report(Path(out_dir), result, spec, tasks_of(spec))
    return result


def _transfer_summary(table: dict, spec: DatasetSpec, dcfg: DownstreamConfig, scenarios: list[int], small: int,
                      days: tuple) -> dict:
    """The headline numbers over the scenarios measured so far (see run_transfer_experiment)."""
    tr, va, te = days
    click = spec.canonical().tasks[0]
    improved = 0
    for s, row in table.items():
        if "methods" not in row:
            continue
        van = row["methods"]["vanilla"]
        best = max((m for m in row["methods"] if m != "vanilla"), key=lambda m: _nan_low(row["methods"][m]["test_auc"][click]))
        row["best_method"] = best
        if row["methods"][best]["test_auc"][click] - van["test_auc"][click] > _pooled_std(row["methods"][best], van, click):
            improved += 1
    srow = table.get(str(small), {})
    if "methods" in srow:
        v_auc = srow["methods"]["vanilla"]["test_auc"][click]
        b = srow["best_method"]
        b_auc = srow["methods"][b]["test_auc"][click]
    else:
        # The smallest scenario was not among those run: null, not NaN (which is not JSON).
        v_auc = b_auc = None
        b = None
    result = {
        "dataset": spec.name,
        "seeds": list(dcfg.seeds),
        "scenarios": scenarios,
        "scenarios_improved": improved,
        "small_scenario": small,
        "vanilla_auc": v_auc,
        "best_transfer_auc": b_auc,
        "best_method": b,
        "lift": None if b_auc is None else b_auc - v_auc,
        "days": {"train": tr, "valid": va, "test": te},
        "table": table,
    }
    return result


def tasks_of(spec: DatasetSpec) -> list[str]:
    return list(spec.canonical().tasks)


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _span(days: list[str]) -> str:
    return f"{days[0]}..{days[-1]} ({len(days)} days)" if len(days) > 1 else f"{days[0]}"


def _write_transfer_report(out: Path, result: dict, spec: DatasetSpec, tasks: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = {s: r for s, r in result["table"].items() if "methods" in r}
    methods = list(next(iter(rows.values()))["methods"]) if rows else []
    lines = [
        f"# Transfer table: {result['dataset']}",
        "",
        f"Test AUC ({', '.join(tasks)}), mean ± std over seeds {result['seeds']}. "
        f"Time split: train {_span(result['days']['train'])}, valid {_span(result['days']['valid'])}, "
        f"test {_span(result['days']['test'])}.",
        "",
    ]
    for task in tasks:
        lines += [f"## {task}", "", "| method | " + " | ".join(f"{s} {r['name']} ({r['rows']['train']} train rows)" for s, r in rows.items()) + " |"]
        lines.append("|---" * (len(rows) + 1) + "|")
        for m in methods:
            cells = [_pm(r["methods"][m], task) if m in r["methods"] else "" for r in rows.values()]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    small = (f"Smallest scenario {result['small_scenario']}: not run." if result["lift"] is None else
             f"Smallest scenario {result['small_scenario']}: vanilla {result['vanilla_auc']:.4f}, best "
             f"{result['best_method']} {result['best_transfer_auc']:.4f} (lift {result['lift']:+.4f}).")
    lines += [
        f"Scenarios where the best transfer method beats vanilla by more than one (pooled) std: "
        f"{result['scenarios_improved']} of {len(rows)}. {small}",
        "",
    ]
    (out / "transfer.md").write_text("\n".join(lines))
    (out / "transfer.json").write_text(json.dumps(result, indent=1, default=float))
    if rows:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods) * len(rows) / 2), 4))
        width = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            xs = np.arange(len(rows)) + j * width
            ys = [r["methods"].get(m, {}).get("test_auc", {}).get(tasks[0], np.nan) for r in rows.values()]
            es = [r["methods"].get(m, {}).get("test_auc_std", {}).get(tasks[0], 0) for r in rows.values()]
            ax.bar(xs, ys, width, yerr=es, label=m)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{s} {r['name']}" for s, r in rows.items()])
        finite = [v for r in rows.values() for st in r["methods"].values() for v in [st["test_auc"][tasks[0]]] if not math.isnan(v)]
        if finite:
            ax.set_ylim(min(finite) - 0.02, max(finite) + 0.02)
        ax.set_ylabel(f"test AUC ({tasks[0]})")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "transfer_auc.png", dpi=100)
        plt.close(fig)


# --- the RankUp ablation ---------------------------------------------------------------
def rankup_variants(full: RankUpConfig) -> dict[str, RankUpConfig]:
    """RankMixer, each RankUp component added alone, full RankUp (same T, D, L)."""
    shape = dict(emb_dim=full.emb_dim, d_model=full.d_model, num_tokens=full.num_tokens, num_layers=full.num_layers,
                 ffn_mult=full.ffn_mult, permutation_seed=full.permutation_seed, crossed_pair=full.crossed_pair)
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
    """Run the RankUp ablation; write ``rankup.md``, ``rankup.json``, ``rankup_erank.png``
    into ``out_dir``. Returns ``{"dataset", "seeds", "rankmixer_auc", "rankup_auc",
    "rankmixer_erank_last", "rankup_erank_last", "variants"}`` (AUC = first task, mean
    over seeds; erank = mean over seeds after the last block)."""
    from datasources import read_log_spec

    cfg = cfg or RankUpExperimentConfig()
    dcfg = cfg.downstream
    spec = spec or read_log_spec(log_path)
    tr, va, te = _days(log_path, dcfg, train_days, valid_days, test_days)
    raw = read_splits(log_path, tr, va, te)
    scenario = None if dcfg.scenario is None else resolve_scenario(raw["train"], spec, dcfg.scenario)
    tables = {k: select_rows(v, scenario, dcfg.sample_type) for k, v in raw.items()}
    reps = list(dcfg.representations) if tables_root is not None else []
    data = build_scenario_data(
        tables, spec, rep_table_paths(tables_root, reps), min_count=dcfg.min_count, max_vocab=dcfg.max_vocab,
        expect_dims=dcfg.expect_dims, expect_model_version=dcfg.expect_model_version,
    )
    canon = spec.canonical()
    pair = _crossed_pair(data, cfg.model.crossed_pair)
    variants = rankup_variants(cfg.model.model_copy(update={"crossed_pair": pair} if pair else {"crossed_token": False}))
    if pair is None:
        variants.pop("+crossed_token")
    else:
        variants = {k: v.model_copy(update={"crossed_pair": pair}) for k, v in variants.items()}
    seq_field = canon.sequence.item_field if dcfg.use_sequence else None
    results: dict[str, dict] = {}
    with torch_threads(dcfg.threads):
        for name, vcfg in variants.items():
            def build(vcfg=vcfg):
                return TokenMixerRanker(
                    vcfg, data.encoder.vocab_sizes, len(data.tasks), user_columns=["user_id", *canon.user_features],
                    item_columns=["item_id", *canon.item_features], seq_field=seq_field, rep_dims=data.rep_dims,
                )

            fitted = _fit_seeds(build, data, dcfg)
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
    _write_rankup_report(Path(out_dir), result, data.tasks)
    return result


def _write_rankup_report(out: Path, result: dict, tasks: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    v = result["variants"]
    layers = list(next(iter(v.values()))["erank"])
    lines = [
        f"# RankUp ablation: {result['dataset']}",
        "",
        f"Scenario {result['scenario'] if result['scenario'] is not None else 'all'}, rows {result['rows']}, "
        f"seeds {result['seeds']}. Test AUC mean ± std; effective rank after each layer (mean over seeds).",
        "",
        "| variant | params | " + " | ".join(f"AUC {t}" for t in tasks) + " | " + " | ".join(f"erank {l}" for l in layers) + " |",
        "|---" * (2 + len(tasks) + len(layers)) + "|",
    ]
    for name, s in v.items():
        lines.append(
            f"| {name} | {s['params']} | " + " | ".join(_pm(s, t) for t in tasks) + " | "
            + " | ".join(f"{s['erank'][l]:.2f}" for l in layers) + " |"
        )
    lines.append("")
    (out / "rankup.md").write_text("\n".join(lines))
    (out / "rankup.json").write_text(json.dumps(result, indent=1, default=float))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in v.items():
        style = "-" if name in ("rankmixer", "rankup") else ":"
        ax.plot(layers, [s["erank"][l] for l in layers], style, marker="o", label=name)
    ax.set_ylabel("effective rank (per-sample T x D)")
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rankup_erank.png", dpi=100)
    plt.close(fig)


def main(
    argv: list[str] | None = None,
    *,
    split: dict[str, list[str]] | None = None,
    checkpoint: str | Path | None = None,
    expect_model_version: str | None = None,
) -> dict:
    """``python -m downstream transfer|rankup --root RUN [--config FILE] [--out DIR]
    [--seeds N] [--epochs N] [--valid-start D --test-start D]``: run on a run root (log +
    tables [+ checkpoints]); the last stdout line is the result JSON (without the bulky
    per-cell table).

    Days: ``split`` ({"train", "valid", "test"} -> days, what ``lfm4ads experiment`` passes:
    the run config's resolved split), else ``--valid-start``/``--test-start`` (train <
    valid start <= valid < test start <= test), else the experiment config's
    ``downstream.valid_days``/``test_days``. ``checkpoint`` (default: the newest under
    ROOT/checkpoints) drives module level and the per-layer tables (published for the
    days the daily ``user_cr`` table has, up to the last test day)."""
    import argparse

    from contracts import RunLayout, load_config

    p = argparse.ArgumentParser(prog="python -m downstream")
    p.add_argument("which", choices=["transfer", "rankup"])
    p.add_argument("--root", required=True, type=Path, help="run root (RunLayout): log/, tables/, checkpoints/")
    p.add_argument("--config", type=Path, help="TransferExperimentConfig / RankUpExperimentConfig YAML")
    p.add_argument("--out", type=Path, help="report folder (default ROOT/reports/experiments)")
    p.add_argument("--seeds", type=int, help="use seeds 0..N-1")
    p.add_argument("--epochs", type=int)
    p.add_argument("--valid-start", help="first validation day (YYYY-MM-DD); needs --test-start")
    p.add_argument("--test-start", help="first test day (YYYY-MM-DD); needs --valid-start")
    a = p.parse_args(argv)
    model = TransferExperimentConfig if a.which == "transfer" else RankUpExperimentConfig
    cfg = load_config(a.config, model) if a.config else model()
    upd = {}
    if a.seeds:
        upd["seeds"] = list(range(a.seeds))
    if a.epochs:
        upd["epochs"] = a.epochs
    if expect_model_version and cfg.downstream.expect_model_version is None:
        upd["expect_model_version"] = expect_model_version
    if upd:
        cfg = cfg.model_copy(update={"downstream": cfg.downstream.model_copy(update=upd)})
    layout = RunLayout(a.root)
    if split is None and (a.valid_start or a.test_start):
        from datasources import log_days

        split = split_by_dates(log_days(layout.log), a.valid_start, a.test_start)
    days = {} if split is None else {f"{k}_days": list(split[k]) for k in ("train", "valid", "test")}
    out = a.out or layout.root / "reports" / "experiments"
    if a.which == "transfer":
        if checkpoint is None:
            ckpts = sorted(layout.checkpoints.iterdir()) if layout.checkpoints.is_dir() else []
            ckpts = [c for c in ckpts if not c.name.startswith(".") and c.is_dir()]
            checkpoint = ckpts[-1] if ckpts else None
        layer_roots = None
        if cfg.cr_layers:
            if checkpoint is None:
                raise ValueError(f"cr_layers {cfg.cr_layers}: per-layer tables need a checkpoint under {layout.checkpoints}")
            from engines import delta_io
            from transfer import publish_layer_tables

            last = max((days.get("test_days") or [max(delta_io.list_days(layout.table("user_cr")))]))
            snap = [d for d in delta_io.list_days(layout.table("user_cr")) if d <= last]
            layer_roots = publish_layer_tables(layout.root, checkpoint, cfg.cr_layers, snap)
        res = run_transfer_experiment(layout.log, layout.root, out, cfg, checkpoint=checkpoint,
                                      layer_roots=layer_roots, **days)
        brief = {k: v for k, v in res.items() if k != "table"}
    else:
        res = run_rankup_experiment(layout.log, layout.root, out, cfg, **days)
        brief = {k: v for k, v in res.items() if k != "variants"}
    print(f"report: {out}")
    print(json.dumps(brief, default=float))
    return res


def split_by_dates(days: list[str], valid_start: str | None, test_start: str | None) -> dict[str, list[str]]:
    """Date-edged time split: train < ``valid_start`` <= valid < ``test_start`` <= test."""
    if not (valid_start and test_start):
        raise ValueError("give both --valid-start and --test-start")
    if not valid_start < test_start:
        raise ValueError(f"--valid-start {valid_start} must be before --test-start {test_start}")
    days = sorted(days)
    split = {
        "train": [d for d in days if d < valid_start],
        "valid": [d for d in days if valid_start <= d < test_start],
        "test": [d for d in days if d >= test_start],
    }
    empty = [k for k, v in split.items() if not v]
    if empty:
        raise ValueError(f"split at {valid_start} / {test_start}: no days for {empty} among {days[0]}..{days[-1]}")
    return split


if __name__ == "__main__":
    main()
