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
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from contracts import DatasetSpec, StrictModel
from downstream.cells import (
    Cell,
    CellStore,
    MethodSpec,
    as_fit_result,
    fingerprint,
    run_cells,
)
from downstream.config import DownstreamConfig, RepName
from downstream.data import (
    Joined,
    ScenarioData,
    build_scenario_data,
    join_once,
    read_splits,
    rep_table_paths,
    resolve_scenario,
    select_indices,
    select_rows,
    split_days,
)
from downstream.evaluate import summarise, torch_threads
from downstream.rankup import RankUpConfig, TokenMixerRanker
from downstream.selection import headline
from downstream.train import FitResult, fit_scenario
from engines.progress import report_progress
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
        default_factory=lambda: DownstreamConfig(seeds=[0, 1, 2, 3, 4], epochs=10, patience=2),
        description="Training settings; its scenario/representations/adapter are ignored here. Default "
        "budget 10 epochs, patience 2 (the daily step keeps DownstreamConfig's 20 / 3): a table is a few "
        "hundred fits on 2 cores (docs/downstream.md, issue 15).",
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
    default_method: str = Field(
        "gate_linear:UR+IR+CR",
        description="The pre-registered row reported on every scenario without any selection: the daily run's "
        "adapter and representations (configs/*.yaml downstream.adapter); its numbers are null when the "
        "table has no such row.",
    )
    workers: int = Field(
        2,
        ge=1,
        description="Processes training cells in parallel (spawned, `downstream.threads` torch threads "
        "each; 2 = one per core of the 2-core reference machine); 1 = in this process. Does not change any number.",
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
        out.append(fit_scenario(build, data, cfg, seed))
    return out


def _days(log_path, cfg: DownstreamConfig, train_days, valid_days, test_days):
    from datasources import log_days

    if train_days and valid_days and test_days:
        return train_days, valid_days, test_days
    return split_days(log_days(log_path), cfg.valid_days, cfg.test_days)


def _pm(stat: dict, task: str) -> str:
    m, s = stat["test_auc"][task], stat["test_auc_std"][task]
    return "n/a" if math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the transfer table ----------------------------------------------------------------
def method_specs(cfg: TransferExperimentConfig, layers: list[str], module: bool) -> list[MethodSpec]:
    """The rows of the table, vanilla first (see TransferExperimentConfig)."""
    dcfg = cfg.downstream
    specs = [MethodSpec("vanilla")]
    for a in cfg.adapters:
        specs.append(MethodSpec(f"{a}:UR+IR+CR", reps=tuple(ALL_REPS), adapter=a))
    for a in cfg.cross_adapters:
        specs.append(MethodSpec(f"{a}+cross:UR+IR+CR", reps=tuple(ALL_REPS), adapter=a, crossed=True))
    for name in cfg.rep_sets:
        row = f"{cfg.rep_set_adapter}:{name}"
        if row not in {s.name for s in specs}:
            specs.append(MethodSpec(row, reps=tuple(REP_SETS[name]), adapter=cfg.rep_set_adapter))
    for name, over in cfg.gate_variants.items():
        vcfg = DownstreamConfig.model_validate({**dcfg.model_dump(), **over})
        reps = tuple(vcfg.representations) if "representations" in over else tuple(ALL_REPS)
        specs.append(
            MethodSpec(
                name,
                reps=reps,
                adapter=vcfg.adapter if reps else "none",
                crossed=vcfg.crossed_token,
                overrides=json.dumps(over, sort_keys=True),
            )
        )
    if cfg.model_level:
        specs.append(MethodSpec("model:retrieval", kind="retrieval", user=cfg.model_level_user))
    for layer in layers:
        for a in cfg.cr_layer_adapters:
            specs.append(MethodSpec(f"{a}:UR+IR+CR@{layer}", data=f"layer:{layer}", reps=tuple(ALL_REPS), adapter=a))
    if module:
        for k in cfg.module_k:
            specs.append(MethodSpec(f"module:k={k}", kind="module", data="module", k=k))
    return specs


def _by_size(train, spec: DatasetSpec) -> list[int]:
    """Every scenario of ``spec``, fewest training rows first (ties: id)."""
    import pyarrow.compute as pc

    from contracts.dataset import CANONICAL_SCENARIO

    counts = {int(s): 0 for s in spec.scenarios}
    vc = pc.value_counts(train[CANONICAL_SCENARIO])
    for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
        counts[int(v)] = c
    return sorted(counts, key=lambda s: (counts[s], s))


def _inputs_fingerprint(
    cfg: TransferExperimentConfig, log_path, tables_root, days: tuple, checkpoint, layer_roots: dict[str, Path]
) -> str:
    """What the cells' numbers depend on: a change of any of these starts a fresh cell folder."""
    from engines import delta_io

    def version(path) -> int | None:
        try:
            return delta_io.open_table(path).version()
        except Exception:  # a table that is not there: no version (the run fails later if it is needed)
            return None

    tables = rep_table_paths(tables_root, ALL_REPS)
    parts = {
        # the training settings only: which rows and scenarios a table has does not change a cell
        # (each cell file carries its row's spec hash)
        "downstream": cfg.downstream.model_dump(mode="json"),
        "days": days,
        "log": [str(Path(log_path).resolve()), version(log_path)],
        "tables": {k: version(v) for k, v in tables.items()},
        "layers": {
            k: [str(v), {n: version(Path(v) / "tables" / n) for n in ALL_REPS}] for k, v in (layer_roots or {}).items()
        },
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
    }
    return fingerprint(parts)


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

    Every (scenario, method, seed) cell records validation and test AUC and is stored
    under ``out_dir/cells/<fingerprint>/`` as soon as it finishes: a killed run started
    again reuses the finished cells. The per-scenario pick is the row with the best mean
    *validation* AUC (:mod:`downstream.selection`); the headline uses its test AUC.

    Returns :func:`downstream.selection.headline`'s keys (click = first task; ``lift``
    for the smallest scenario) plus ``{"dataset", "seeds", "scenarios", "small_scenario",
    "days", "cells": {"reused", "computed"}, "timing", "wall_s", "table"}``.
    """
    from datasources import read_log_spec

    t_start = time.perf_counter()
    cfg = cfg or TransferExperimentConfig()
    dcfg = cfg.downstream
    spec = spec or read_log_spec(log_path)
    tr, va, te = _days(log_path, dcfg, train_days, valid_days, test_days)
    out_dir = Path(out_dir)
    store = CellStore(
        out_dir / "cells" / _inputs_fingerprint(cfg, log_path, tables_root, (tr, va, te), checkpoint, layer_roots or {})
    )
    raw = read_splits(log_path, tr, va, te)
    small = resolve_scenario(raw["train"], spec, None)
    # smallest first (by training rows): the headline scenario is measured first, so a stopped
    # run already has it
    scenarios = cfg.scenarios or _by_size(raw["train"], spec)
    loaded = None
    if checkpoint is not None and cfg.module_k:
        from pretrain import load_checkpoint

        loaded = load_checkpoint(checkpoint, expect_spec=spec.canonical())
    specs = method_specs(cfg, list(layer_roots or {}), loaded is not None)
    rep_tables = rep_table_paths(tables_root, ALL_REPS)
    timing = {"read_s": round(time.perf_counter() - t_start, 2), "data_s": 0.0, "fit_s": 0.0, "report_s": 0.0}
    tasks = tasks_of(spec)
    # long cells first inside a scenario (module level costs ~10x a feature-level fit), so the
    # pool's last cells are short ones and no core idles at the end
    order = {"module": 0, "ranking": 1, "retrieval": 2}
    ordered = sorted(specs, key=lambda m: order.get(m.kind, 1))
    meta: dict[str, dict] = {}  # scenario -> name, rows, coverage (or skipped)
    done: dict[str, int] = {}
    finished: dict[str, dict] = {}

    joins: dict[str, dict[str, Joined]] = {}  # data variant -> split -> join of every scenario's rows

    def build(variant: str, tables: dict, rows: dict[str, np.ndarray]) -> ScenarioData:
        kw = dict(min_count=dcfg.min_count, max_vocab=dcfg.max_vocab)
        if variant == "module":
            return build_scenario_data(tables, spec, {}, encoder=loaded.encoder)
        if variant.startswith("layer:"):
            from transfer import layer_rep_paths

            paths = layer_rep_paths(tables_root, layer_roots[variant[6:]], ALL_REPS)
        else:
            paths = rep_tables
        if variant not in joins:  # the Delta snapshots are read once per split, not once per scenario
            joins[variant] = {
                k: join_once(v, paths, expect_dims=dcfg.expect_dims, expect_model_version=dcfg.expect_model_version)
                for k, v in raw.items()
            }
        joined = {k: joins[variant][k].take(rows[k]) for k in raw}
        return build_scenario_data(tables, spec, paths, joined=joined, **kw)

    def report() -> None:
        t0 = time.perf_counter()
        table = {str(s): finished[str(s)] for s in scenarios if str(s) in finished}
        result = _transfer_summary(table, spec, dcfg, cfg, scenarios, small, (tr, va, te), store, timing, t_start)
        _write_transfer_report(out_dir, result, spec, tasks)
        timing["report_s"] = round(timing["report_s"] + time.perf_counter() - t0, 2)

    def on_done(c: Cell, _cell: dict, _reused: bool) -> None:
        done[c.scenario] += 1
        if done[c.scenario] == len(specs) * len(dcfg.seeds):  # the scenario's last cell
            key = c.scenario
            res = {
                m.name: summarise([as_fit_result(store.get(key, m, seed)) for seed in dcfg.seeds], tasks) for m in specs
            }
            finished[key] = {**meta[key], "methods": res}
            print(
                f"transfer: scenario {key} done; cells computed {store.computed}, reused {store.reused}; "
                f"{time.perf_counter() - t_start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            report_progress(
                "transfer.scenarios", len(finished), len(scenarios), scenario=str(key), cells=store.computed
            )
            report()  # written after every scenario: a long run that is stopped keeps what it measured

    def all_cells():
        """Scenario by scenario (smallest first: the headline scenario is measured first, so a
        stopped run already has it): prepare (or read the cached) data, then its cells. Runs
        lazily inside run_cells, so the workers train scenario n while scenario n+1 is prepared."""
        for s in scenarios:
            key = str(s)
            rows = {
                k: select_indices(v, resolve_scenario(raw["train"], spec, s), dcfg.sample_type) for k, v in raw.items()
            }
            tables = {k: v.take(pa.array(rows[k])) for k, v in raw.items()}
            if any(t.num_rows == 0 for t in tables.values()):
                finished[key] = {"skipped": "a split has no rows"}
                continue
            t0 = time.perf_counter()
            paths = {
                v: store.cached_data(key, v, lambda v=v, tables=tables, rows=rows: build(v, tables, rows))
                for v in dict.fromkeys(m.data for m in specs)
            }
            daily = torch.load(paths["daily"], weights_only=False)
            meta[key] = {
                "name": spec.scenarios.get(s, str(s)),
                "rows": {"train": daily.train.num_rows, "valid": daily.valid.num_rows, "test": daily.test.num_rows},
                "coverage": daily.coverage,
            }
            del daily
            done[key] = 0
            timing["data_s"] = round(timing["data_s"] + time.perf_counter() - t0, 2)
            for m in ordered:
                for seed in dcfg.seeds:
                    yield Cell(key, m, seed, paths[m.data])

    t0 = time.perf_counter()
    with torch_threads(dcfg.threads):
        run_cells(
            all_cells(),
            store,
            dcfg,
            workers=cfg.workers,
            checkpoint=None if checkpoint is None else str(checkpoint),
            on_done=on_done,
        )
    # fit_s: wall seconds of the cells' phase, data preparation (overlapping it) and reports excluded
    timing["fit_s"] = round(time.perf_counter() - t0 - timing["data_s"] - timing["report_s"], 2)
    table = {str(s): finished[str(s)] for s in scenarios if str(s) in finished}
    result = _transfer_summary(table, spec, dcfg, cfg, scenarios, small, (tr, va, te), store, timing, t_start)
    _write_transfer_report(out_dir, result, spec, tasks)
    return result


def _transfer_summary(
    table: dict,
    spec: DatasetSpec,
    dcfg: DownstreamConfig,
    cfg: TransferExperimentConfig,
    scenarios: list[int],
    small: int,
    days: tuple,
    store: CellStore,
    timing: dict,
    t_start: float,
) -> dict:
    """The headline numbers over the scenarios measured so far (see run_transfer_experiment)."""
    tr, va, te = days
    click = spec.canonical().tasks[0]
    rows = {s: r["methods"] for s, r in table.items() if "methods" in r}
    deployable = [
        m.name
        for m in method_specs(cfg, [], False)
        if m.kind == "ranking" and m.data == "daily" and m.reps and m.overrides == "{}"
    ]
    head = headline(rows, click, str(small), cfg.default_method, deployable)
    for s, r in table.items():
        if "methods" in r:
            r["picked_method"] = head["picks"][s]
            r["best_on_test_method"] = head["upper_bound_best_on_test"]["picks"][s]
    return {
        "dataset": spec.name,
        "seeds": list(dcfg.seeds),
        "scenarios": scenarios,
        "small_scenario": small,
        **head,
        "days": {"train": tr, "valid": va, "test": te},
        "cells": {"reused": store.reused, "computed": store.computed, "folder": str(store.folder)},
        "timing": {**timing, "fit_s_by_method": dict(store.seconds), "phase_s": dict(store.phase_s)},
        "wall_s": round(time.perf_counter() - t_start, 2),
        "table": table,
    }


def tasks_of(spec: DatasetSpec) -> list[str]:
    return list(spec.canonical().tasks)


def _span(days: list[str]) -> str:
    return f"{days[0]}..{days[-1]} ({len(days)} days)" if len(days) > 1 else f"{days[0]}"


def _f(x: float | None, sign: bool = False) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.4f}" if sign else f"{x:.4f}")


def _write_transfer_report(out: Path, result: dict, spec: DatasetSpec, tasks: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = {s: r for s, r in result["table"].items() if "methods" in r}
    methods = list(next(iter(rows.values()))["methods"]) if rows else []
    lines = [
        f"# Transfer table: {result['dataset']}",
        "",
        f"Test AUC ({', '.join(tasks)}), mean ± std over seeds {result['seeds']}; validation AUC "
        f"({tasks[0]}) in the first table. Time split: train {_span(result['days']['train'])}, valid "
        f"{_span(result['days']['valid'])}, test {_span(result['days']['test'])}. Per scenario, **picked** = "
        "the row with the best mean validation AUC (chosen before looking at test); `†` = best on test "
        "(an upper bound only).",
        "",
        "## Validation AUC (selection metric)",
        "",
        "| method | " + " | ".join(f"{s} {r['name']}" for s, r in rows.items()) + " |",
        "|---" * (len(rows) + 1) + "|",
    ]
    for m in methods:
        cells = [
            (
                f"**{r['methods'][m]['valid_auc']:.4f}**"
                if r.get("picked_method") == m
                else f"{r['methods'][m]['valid_auc']:.4f}"
            )
            if m in r["methods"]
            else ""
            for r in rows.values()
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    for task in tasks:
        lines += [
            f"## Test AUC: {task}",
            "",
            "| method | "
            + " | ".join(f"{s} {r['name']} ({r['rows']['train']} train rows)" for s, r in rows.items())
            + " |",
        ]
        lines.append("|---" * (len(rows) + 1) + "|")
        for m in methods:
            cells = []
            for r in rows.values():
                if m not in r["methods"]:
                    cells.append("")
                    continue
                c = _pm(r["methods"][m], task)
                if r.get("picked_method") == m:
                    c = f"**{c}** (picked)"
                if task == tasks[0] and r.get("best_on_test_method") == m:
                    c += " †"
                cells.append(c)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if rows:
        from downstream.selection import improves

        common = [m for m in methods if all(m in r["methods"] for r in rows.values())]
        lines += [
            "## Mean over scenarios",
            "",
            f"| method | mean valid AUC | mean test AUC ({tasks[0]}) | scenarios above vanilla by > 1 pooled std |",
            "|---|---|---|---|",
        ]
        for m in common:
            mv = float(np.mean([r["methods"][m]["valid_auc"] for r in rows.values()]))
            mt = float(np.mean([r["methods"][m]["test_auc"][tasks[0]] for r in rows.values()]))
            n = sum(improves(r["methods"], m, tasks[0]) for r in rows.values()) if m != "vanilla" else ""
            lines.append(f"| {m} | {mv:.4f} | {mt:.4f} | {n} |")
        lines.append("")
    ub = result["upper_bound_best_on_test"]
    lines += [
        "## Summary",
        "",
        "| | picked on validation | default method | best on test (upper bound) |",
        "|---|---|---|---|",
        f"| scenarios above vanilla by > 1 pooled std | {result['scenarios_improved']} of {len(rows)} | "
        f"{result['default_scenarios_improved']} of {len(rows)} | {ub['scenarios_improved']} of {len(rows)} |",
        f"| mean test AUC over scenarios (vanilla {_f(result['mean_vanilla_test_auc'])}) | "
        f"{_f(result['mean_picked_test_auc'])} | {_f(result['mean_default_test_auc'])} | {_f(ub['mean_test_auc'])} |",
        f"| lift, smallest scenario {result['small_scenario']} | {_f(result['lift'], True)} "
        f"({result['picked_method']}) | {_f(result['default_lift'], True)} | {_f(ub['lift'], True)} |",
        "",
        f"Default method (fixed before the run: the daily run's adapter): `{result['default_method']}`. "
        f"Best on validation across scenarios (mean validation AUC; the rule for the daily default): "
        f"`{result['valid_best_method']}`.",
        "",
        f"Cells: {result['cells']['computed']} computed, {result['cells']['reused']} reused; wall "
        f"{result['wall_s']:.0f} s (read {result['timing']['read_s']:.0f} s, data {result['timing']['data_s']:.0f} s, "
        f"fits {result['timing']['fit_s']:.0f} s).",
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
        finite = [
            v
            for r in rows.values()
            for st in r["methods"].values()
            for v in [st["test_auc"][tasks[0]]]
            if not math.isnan(v)
        ]
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
    seq_field = canon.sequence.item_field if dcfg.use_sequence else None
    results: dict[str, dict] = {}
    with torch_threads(dcfg.threads):
        for name, vcfg in variants.items():

            def build(vcfg=vcfg):
                return TokenMixerRanker(
                    vcfg,
                    data.encoder.vocab_sizes,
                    len(data.tasks),
                    user_columns=["user_id", *canon.user_features],
                    item_columns=["item_id", *canon.item_features],
                    seq_field=seq_field,
                    rep_dims=data.rep_dims,
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
        "| variant | params | "
        + " | ".join(f"AUC {t}" for t in tasks)
        + " | "
        + " | ".join(f"erank {l}" for l in layers)
        + " |",
        "|---" * (2 + len(tasks) + len(layers)) + "|",
    ]
    for name, s in v.items():
        lines.append(
            f"| {name} | {s['params']} | "
            + " | ".join(_pm(s, t) for t in tasks)
            + " | "
            + " | ".join(f"{s['erank'][l]:.2f}" for l in layers)
            + " |"
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
    p.add_argument("--workers", type=int, help="transfer: processes training cells in parallel")
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
    if a.workers and a.which == "transfer":
        cfg = cfg.model_copy(update={"workers": a.workers})
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
        brief = {k: v for k, v in res.items() if k != "table"}
    else:
        res = run_rankup_experiment(layout.log, layout.root, out, cfg, **days)
        brief = {k: v for k, v in res.items() if k != "variants"}
    print(f"report: {out}")
    print(json.dumps(brief, default=float))
    return {**res, "report_dir": str(out)}


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
