"""The LFM4Ads transfer table (issue 6): per scenario, test AUC of vanilla vs feature level
(linear, gate, gate_linear; UR / UR+IR / UR+IR+CR) vs module level (per k) vs model level,
mean and standard deviation over seeds, each row picked on validation AUC.

:func:`run_transfer_experiment` runs the cells (:mod:`studies.cells`) scenario by scenario
and rewrites the report (:mod:`studies.reports`) after every scenario.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from contracts import DatasetSpec
from downstream.config import DownstreamConfig
from downstream.data import (
    Joined,
    ScenarioData,
    build_scenario_data,
    join_once,
    read_splits,
    rep_table_paths,
    resolve_scenario,
    select_indices,
)
from downstream.evaluate import summarise, torch_threads
from engines.progress import report_progress
from studies.cells import Cell, CellStore, as_fit_result, fingerprint, run_cells
from studies.days import study_days
from studies.reports import tasks_of, write_transfer_report
from studies.selection import headline
from studies.transfer_config import ALL_REPS, TransferExperimentConfig, method_specs


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
    *validation* AUC (:mod:`studies.selection`); the headline uses its test AUC.

    Returns :func:`studies.selection.headline`'s keys (click = first task; ``lift``
    for the smallest scenario) plus ``{"dataset", "seeds", "scenarios", "small_scenario",
    "days", "cells": {"reused", "computed"}, "timing", "wall_s", "table"}``.
    """
    from datasources import read_log_spec

    t_start = time.perf_counter()
    cfg = cfg or TransferExperimentConfig()
    dcfg = cfg.downstream
    spec = spec or read_log_spec(log_path)
    tr, va, te = study_days(log_path, train_days, valid_days, test_days)
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
        write_transfer_report(out_dir, result, spec, tasks)
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
    write_transfer_report(out_dir, result, spec, tasks)
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
