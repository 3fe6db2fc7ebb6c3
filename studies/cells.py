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
- :func:`run_cells`: the cells in this process (``workers == 1``) or in one pool of
  ``workers`` spawned processes (1 torch thread each) for the whole table: the cell
  iterable is consumed lazily, so the caller can prepare the next scenario's data while
  the workers train the previous one's cells, and no core waits at a scenario boundary.
  The worker that trains a cell also stores it, so a finished fit is on disk even if the
  driver is busy or killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
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
    """Train one seed of one row; the cell as a JSON-able dict (``seconds``: wall seconds of
    the fit, ``cpu_s``: CPU seconds of this process during it, ``phase_s``: wall seconds per
    phase, see :class:`downstream.train.FitResult`; ``history``: validation AUC per epoch)."""
    cfg = spec.config(dcfg)
    t0, c0 = time.perf_counter(), time.process_time()
    _, r = fit_scenario(builder(spec, data, dcfg, loaded), data, cfg, seed)
    return {
        "valid_auc": r.valid_auc,
        "test_auc": r.test_auc,
        "epochs": r.epochs,
        "best_epoch": r.best_epoch,
        "history": r.history,
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "phase_s": r.seconds,
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
    # computed cells: wall seconds per phase (build, train, valid, test, and per worker process:
    # start = spawn + imports + warm-up, data = reading the scenario cache), and fit CPU seconds
    phase_s: dict[str, float] = field(default_factory=dict)

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

    def write(self, scenario: str, spec: MethodSpec, seed: int, cell: dict) -> None:
        """Store one cell (atomic rename: a killed run leaves a finished cell or none)."""
        p = self.path(scenario, spec, seed)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cell, default=float))
        os.replace(tmp, p)

    def record(self, spec: MethodSpec, cell: dict) -> None:
        """Count a computed cell and add its seconds to the timing totals."""
        self.computed += 1
        self.seconds[spec.name] = round(self.seconds.get(spec.name, 0.0) + cell.get("seconds", 0.0), 3)
        parts = {**cell.get("phase_s", {}), **cell.get("process_s", {}), "fit_cpu": cell.get("cpu_s", 0.0)}
        for k, v in parts.items():
            self.phase_s[k] = round(self.phase_s.get(k, 0.0) + v, 3)

    def put(self, scenario: str, spec: MethodSpec, seed: int, cell: dict) -> None:
        self.write(scenario, spec, seed, cell)
        self.record(spec, cell)

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
_PROCESS_S: dict[str, float] = {}  # this process's one-off seconds not yet reported with a cell


def _data(path: Path) -> ScenarioData:
    key = str(path)
    if key not in _DATA:
        t0 = time.perf_counter()
        if len(_DATA) >= 4:  # cells arrive scenario by scenario (two data variants each): keep the newest
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = torch.load(path, weights_only=False)  # our own cache file
        _PROCESS_S["data"] = _PROCESS_S.get("data", 0.0) + time.perf_counter() - t0
    return _DATA[key]


def _loaded(checkpoint: str | None):
    if checkpoint is None:
        return None
    if checkpoint not in _LOADED:
        from pretrain import load_checkpoint

        t0 = time.perf_counter()
        _LOADED[checkpoint] = load_checkpoint(checkpoint)
        _PROCESS_S["data"] = _PROCESS_S.get("data", 0.0) + time.perf_counter() - t0
    return _LOADED[checkpoint]


def _process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 where unavailable)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    # the one-off cost of the first fit in a process (use_deterministic_algorithms imports
    # torch._inductor: seconds), paid here and reported in this process's start time
    torch.use_deterministic_algorithms(True, warn_only=True)
    _PROCESS_S["start"] = _process_age()  # spawn + interpreter + imports + warm-up
    parent = os.getppid()

    def orphan_watch() -> None:  # a killed experiment must not leave its workers training
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    import threading

    threading.Thread(target=orphan_watch, daemon=True).start()


def _run(spec: MethodSpec, data_path: Path, dcfg: DownstreamConfig, seed: int, checkpoint: str | None) -> dict:
    cell = fit_cell(spec, _data(data_path), dcfg, seed, _loaded(checkpoint) if spec.kind == "module" else None)
    if _PROCESS_S:
        cell["process_s"] = {k: round(v, 3) for k, v in _PROCESS_S.items()}
        _PROCESS_S.clear()
    return cell


def _run_and_store(store_folder: Path, c: "Cell", dcfg: DownstreamConfig, checkpoint: str | None) -> dict:
    """In a worker: fit one cell and store it (the driver only counts it)."""
    cell = _run(c.spec, c.data_path, dcfg, c.seed, checkpoint)
    CellStore(store_folder).write(c.scenario, c.spec, c.seed, cell)
    return cell


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
    on_done: Callable[[Cell, dict, bool], None] | None = None,
) -> None:
    """Run every cell not yet in ``store`` (finished ones are counted as reused).

    ``cells`` is consumed lazily: with ``workers > 1`` each cell is submitted to one pool
    (kept for the whole iterable) as it is yielded, so a generator may prepare the next
    scenario's data while the workers train. ``on_done(cell, result, reused)`` runs in this
    process for every cell, reused ones included (at enumeration), computed ones as they
    finish."""

    def reused(c: Cell) -> bool:
        got = store.get(c.scenario, c.spec, c.seed)
        if got is None:
            return False
        store.reused += 1
        if on_done:
            on_done(c, got, True)
        return True

    if workers <= 1:
        for c in cells:
            if reused(c):
                continue
            cell = _run(c.spec, c.data_path, dcfg, c.seed, checkpoint)
            store.put(c.scenario, c.spec, c.seed, cell)
            if on_done:
                on_done(c, cell, False)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, wait

    def finish(done) -> None:
        for f in done:
            c = futures.pop(f)
            cell = f.result()
            store.record(c.spec, cell)
            if on_done:
                on_done(c, cell, False)

    futures: dict = {}
    # spawn, not fork: a forked child of a process whose OpenMP pool is up can hang
    with ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(dcfg.threads,),
    ) as pool:
        for c in cells:
            if reused(c):
                continue
            futures[pool.submit(_run_and_store, store.folder, c, dcfg, checkpoint)] = c
            finish([f for f in list(futures) if f.done()])  # report early finishers while enumerating
        while futures:
            done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            finish(done)


def spec_dict(spec: MethodSpec) -> dict:
    return asdict(spec)
