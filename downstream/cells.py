"""The transfer table's unit of work: one (scenario, method, seed) fit, a *cell*.

- :class:`MethodSpec`: a picklable description of one row (what model, on which data),
  so that a cell can run in another process (no closures cross the boundary).
- :class:`CellStore`: finished cells as one small JSON file each under
  ``<out>/cells/<fingerprint>/s<scenario>/<method>.<spec hash>.seed<k>.json``; a killed run
  started again with the same inputs reuses them (the fingerprint covers the training
  settings, the days, the log and table versions and the checkpoint; the spec hash the
  row's definition), so only unfinished cells are recomputed, and adding rows or
  scenarios to a table reuses every cell it already has.
- Scenario data (encoded, joined tensors) is cached beside the cells (``data/*.pt``):
  built once per scenario and data variant, read by every worker and by a resumed run.
- :func:`run_cells`: the cells in this process (``workers == 1``) or in a pool of
  ``workers`` spawned processes (1 torch thread each).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

import torch
from torch import nn

from downstream.config import DownstreamConfig
from downstream.data import ScenarioData
from downstream.train import FitResult, fit_scenario


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table. ``data``: which scenario data it trains on ("daily" = the
    published tables, "layer:<name>" = that CR layer's tables, "module" = the checkpoint's
    encoder, no tables)."""

    name: str
    kind: str = "ranking"  # ranking | retrieval | module
    data: str = "daily"
    reps: tuple[str, ...] = ()
    adapter: str = "none"
    crossed: bool = False
    overrides: str = "{}"  # DownstreamConfig overrides, JSON
    k: int = 0  # module level: LFM layers copied
    user: str = "user_ur"  # model level: user side

    def key(self) -> str:
        """Short hash of the whole spec: a row renamed or redefined never reuses another's cells."""
        return fingerprint(asdict(self))[:8]

    def config(self, dcfg: DownstreamConfig) -> DownstreamConfig:
        over = json.loads(self.overrides)
        return DownstreamConfig.model_validate({**dcfg.model_dump(), **over}) if over else dcfg


def builder(spec: MethodSpec, data: ScenarioData, dcfg: DownstreamConfig, loaded=None) -> Callable[[], nn.Module]:
    """The model factory of one row."""
    from downstream.evaluate import ranking_builder

    if spec.kind == "retrieval":
        from downstream.model import RetrievalRanker

        return lambda: RetrievalRanker(data.rep_dims, spec.user, len(data.tasks))
    if spec.kind == "module":
        from transfer import isomorphic_from_checkpoint

        return lambda: isomorphic_from_checkpoint(loaded, spec.k, len(data.tasks))
    return ranking_builder(data, spec.config(dcfg), list(spec.reps), spec.adapter, crossed=spec.crossed)


def fit_cell(spec: MethodSpec, data: ScenarioData, dcfg: DownstreamConfig, seed: int, loaded=None) -> dict:
    """Train one seed of one row; the cell as a JSON-able dict."""
    cfg = spec.config(dcfg)
    t0 = time.perf_counter()
    _, r = fit_scenario(builder(spec, data, dcfg, loaded), data, cfg, seed)
    return {
        "valid_auc": r.valid_auc,
        "test_auc": r.test_auc,
        "epochs": r.epochs,
        "best_epoch": r.best_epoch,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def as_fit_result(cell: dict) -> FitResult:
    return FitResult(cell["valid_auc"], cell["test_auc"], cell["epochs"], cell["best_epoch"])


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CellStore:
    """Finished cells of one experiment input (``folder`` = ``<out>/cells/<fingerprint>``)."""

    folder: Path
    reused: int = 0
    computed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # method -> fit seconds (computed cells)

    def path(self, scenario: str, spec: MethodSpec, seed: int) -> Path:
        return self.folder / f"s{scenario}" / f"{quote(spec.name, safe='')}.{spec.key()}.seed{seed}.json"

    def get(self, scenario: str, spec: MethodSpec, seed: int) -> dict | None:
        p = self.path(scenario, spec, seed)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:  # cannot happen with put's rename; recompute if it does
            return None

    def put(self, scenario: str, spec: MethodSpec, seed: int, cell: dict) -> None:
        p = self.path(scenario, spec, seed)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cell, default=float))
        os.replace(tmp, p)  # a killed run leaves a finished cell or none, never half of one
        self.computed += 1
        self.seconds[spec.name] = round(self.seconds.get(spec.name, 0.0) + cell.get("seconds", 0.0), 3)

    def data_path(self, scenario: str, variant: str) -> Path:
        return self.folder / "data" / f"s{scenario}.{quote(variant, safe='')}.pt"

    def cached_data(self, scenario: str, variant: str, build: Callable[[], ScenarioData]) -> Path:
        """Path of the scenario data file, built (and saved atomically) if missing."""
        p = self.data_path(scenario, variant)
        if not p.is_file():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            torch.save(build(), tmp)
            os.replace(tmp, p)
        return p


# --- workers ---------------------------------------------------------------------------
_DATA: dict[str, ScenarioData] = {}
_LOADED: dict[str, object] = {}


def _data(path: Path) -> ScenarioData:
    key = str(path)
    if key not in _DATA:
        if len(_DATA) >= 3:  # cells arrive scenario by scenario: keep the few most recent
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = torch.load(path, weights_only=False)  # our own cache file
    return _DATA[key]


def _loaded(checkpoint: str | None):
    if checkpoint is None:
        return None
    if checkpoint not in _LOADED:
        from pretrain import load_checkpoint

        _LOADED[checkpoint] = load_checkpoint(checkpoint)
    return _LOADED[checkpoint]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    parent = os.getppid()

    def orphan_watch() -> None:  # a killed experiment must not leave its workers training
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    import threading

    threading.Thread(target=orphan_watch, daemon=True).start()


def _run(spec: MethodSpec, data_path: Path, dcfg: DownstreamConfig, seed: int, checkpoint: str | None) -> dict:
    return fit_cell(spec, _data(data_path), dcfg, seed, _loaded(checkpoint) if spec.kind == "module" else None)


@dataclass(frozen=True)
class Cell:
    scenario: str
    spec: MethodSpec
    seed: int
    data_path: Path


def run_cells(
    cells: Iterable[Cell],
    store: CellStore,
    dcfg: DownstreamConfig,
    *,
    workers: int = 1,
    checkpoint: str | None = None,
    on_done: Callable[[Cell, dict], None] | None = None,
) -> None:
    """Run every cell not yet in ``store`` (finished ones are counted as reused)."""
    todo = []
    for c in cells:
        if store.get(c.scenario, c.spec, c.seed) is not None:
            store.reused += 1
        else:
            todo.append(c)
    if not todo:
        return
    if workers <= 1:
        for c in todo:
            cell = _run(c.spec, c.data_path, dcfg, c.seed, checkpoint)
            store.put(c.scenario, c.spec, c.seed, cell)
            if on_done:
                on_done(c, cell)
        return
    import multiprocessing as mp

    # spawn, not fork: a forked child of a process whose OpenMP pool is up can hang
    with ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(dcfg.threads,)
    ) as pool:
        futures = {pool.submit(_run, c.spec, c.data_path, dcfg, c.seed, checkpoint): c for c in todo}
        for f in as_completed(futures):
            c = futures[f]
            cell = f.result()
            store.put(c.scenario, c.spec, c.seed, cell)
            if on_done:
                on_done(c, cell)


def spec_dict(spec: MethodSpec) -> dict:
    return asdict(spec)
