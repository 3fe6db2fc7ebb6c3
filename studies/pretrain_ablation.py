"""Ablations of the foundation model (issue 3), in one process with the plain loop (the
same per-step code as Ray Train; bit-identical for one worker) to avoid paying Ray
Train start-up per run::

    python -m studies ablation --config configs/studies/pretrain_ablation_generated.yaml

Variants: full model (one-sided NLIR); no sequence encoder; full attention everywhere (no
BFTS); no NLIR (plain GELU FFN); NLIR read as a SwiGLU FFN (the earlier form); SFG on;
target tokens (target-aware path into the mix tower); combined-pair loss (alpha=0.8) on the
sparse task (``conversion`` on generated data, the only task on MovieLens). Validation AUC per
task, mean and std over seeds. Last stdout line: JSON {variant: {task: {mean, std, runs}}}.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from contracts import DatasetSpec, StrictModel, split_days

VARIANTS: dict[str, dict] = {
    "full": {},
    "no_sequence": {"model": {"use_sequence": False}},
    "no_bfts": {"model": {"bfts_full_layers": 99}},
    "no_nlir": {"model": {"nlir": "off"}},
    "nlir_swiglu": {"model": {"nlir_form": "swiglu"}},
    "sfg": {"model": {"sfg": True}},
    "target_tokens": {"model": {"target_tokens": True}},
    "pair_loss": {"train": {"pairwise_alpha": "<sparse>"}},
}
VariantName = Literal["full", "no_sequence", "no_bfts", "no_nlir", "nlir_swiglu", "sfg", "target_tokens", "pair_loss"]
DataName = Literal["generated", "movielens"]

DEFAULT_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
# the shared MovieLens-100K protocol: train < 1998-02-01 <= valid < 1998-03-01 <= test
MOVIELENS_VALID_START, MOVIELENS_TEST_START = "1998-02-01", "1998-03-01"


class AblationConfig(StrictModel):
    """One ablation run: the data, the training budget, which variants over which seeds."""

    data: DataName = Field("generated", description="A generated log, or MovieLens-100K.")
    movielens: str = Field(str(DEFAULT_MOVIELENS), description="MovieLens-100K folder (data: movielens).")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Training seeds (the data is fixed).")
    days: int = Field(6, ge=2, description="Generated log: days (the last one is validation).")
    rows_per_day: int = Field(8000, ge=1, description="Generated log: rows per day.")
    data_seed: int = Field(0, description="Generated log: the generator's seed.")
    epochs: int = Field(3, ge=1, description="Epochs per run (patience 1, best epoch by click AUC).")
    threads: int = Field(1, ge=1, description="Torch threads per run.")
    variants: list[VariantName] = Field(default_factory=lambda: list(VARIANTS), description="Variants to run.")


def make_log(
    data: DataName,
    work: Path,
    *,
    days: int = 6,
    rows_per_day: int = 8000,
    data_seed: int = 0,
    movielens: str | Path = DEFAULT_MOVIELENS,
    num_users: int | None = None,
    num_items: int | None = None,
) -> Path:
    """Write a study's log under ``work/log``: generated (``num_users``/``num_items`` None =
    the generator's defaults) or MovieLens-100K materialised; returns the log path."""
    from datasources import GeneratorConfig, MovieLensSource, generate_log, materialize

    log = work / "log"
    if data == "generated":
        sizes = {k: v for k, v in (("num_users", num_users), ("num_items", num_items)) if v is not None}
        generate_log(GeneratorConfig(days=days, rows_per_day=rows_per_day, seed=data_seed, **sizes), log)
    else:
        materialize(MovieLensSource(kind="movielens", path=Path(movielens)), log)
    return log


def load_data(cfg: AblationConfig, work: Path) -> tuple[DatasetSpec, pa.Table, pa.Table]:
    """``(spec, train rows, validation rows)``: generated = every day but the last for
    training, the last for validation; MovieLens = the shared protocol's train and valid."""
    from datasources import log_days, read_log, read_log_spec

    log = make_log(
        cfg.data, work, days=cfg.days, rows_per_day=cfg.rows_per_day, data_seed=cfg.data_seed, movielens=cfg.movielens
    )
    days = log_days(log)
    if cfg.data == "generated":
        train_days, valid_days = days[:-1], days[-1:]
    else:
        split = split_days(days, valid_start=MOVIELENS_VALID_START, test_start=MOVIELENS_TEST_START)
        train_days, valid_days = split["train"], split["valid"]
    return read_log_spec(log), read_log(log, train_days), read_log(log, valid_days)


def run_ablation(cfg: AblationConfig, out: Path | None = None) -> dict:
    """Train every variant x seed; print a line per run, a Markdown table and the summary
    JSON; ``out``: also write {args, per-run AUCs, summary} as JSON (after every run)."""
    from contracts.base import deep_merge
    from pretrain import FeatureEncoder, FoundationModel, PretrainConfig
    from pretrain.data import to_arrays
    from pretrain.diagnostics import task_metrics
    from pretrain.replica import fit_plain

    with tempfile.TemporaryDirectory() as tmp:
        spec, tr, va = load_data(cfg, Path(tmp))
    enc = FeatureEncoder.fit(tr, spec)
    train_arr, valid_arr = to_arrays(enc.encode(tr)), to_arrays(enc.encode(va))
    sparse = "conversion" if "conversion" in spec.tasks else spec.tasks[-1]
    print(f"{cfg.data}: {tr.num_rows} train / {va.num_rows} valid rows, tasks {spec.tasks}", flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    for name in cfg.variants:
        over = json.loads(json.dumps(VARIANTS[name]).replace('"<sparse>"', json.dumps({sparse: 0.8})))
        for seed in cfg.seeds:
            train = {"epochs": cfg.epochs, "seed": seed, "torch_threads": cfg.threads, "patience": 1}
            pcfg = PretrainConfig.model_validate(deep_merge({"train": {**train, "diagnostics": False}}, over))
            t0 = time.perf_counter()
            st = fit_plain(pcfg.model, pcfg.train, spec, enc.vocab_sizes, train_arr, valid_arr)
            model = FoundationModel(pcfg.model, spec, enc.vocab_sizes)
            model.load_state_dict(st["best_state"])
            m = task_metrics(model, valid_arr, enc.tasks, enc.scenario_ids, None)
            for task in spec.tasks:
                if f"{task}.auc" in m:
                    results.setdefault(name, {}).setdefault(task, []).append(m[f"{task}.auc"])
            print(
                f"{name} seed={seed}: "
                + ", ".join(f"{t}={m.get(f'{t}.auc', float('nan')):.4f}" for t in spec.tasks)
                + f" ({time.perf_counter() - t0:.0f}s, {st['epoch']} epochs)",
                flush=True,
            )
            if out:  # after every run: an interrupted ablation keeps what it measured
                _write(out, cfg, results)
    summary = _summary(results)
    print("| variant | " + " | ".join(f"{t} AUC" for t in spec.tasks) + " |")
    print("|---|" + "---|" * len(spec.tasks))
    for v, r in summary.items():
        print(
            f"| {v} | "
            + " | ".join(f"{r[t]['mean']:.4f} ± {r[t]['std']:.4f}" if t in r else "n/a" for t in spec.tasks)
            + " |"
        )
    if out:
        _write(out, cfg, results)
    print(json.dumps(summary))
    return summary


def _summary(results: dict[str, dict[str, list[float]]]) -> dict:
    """Mean and population std (numpy's default) over seeds, per variant and task."""
    return {
        v: {
            t: {"mean": round(float(np.mean(a)), 4), "std": round(float(np.std(a)), 4), "runs": len(a)}
            for t, a in r.items()
        }
        for v, r in results.items()
    }


def _write(out: Path, cfg: AblationConfig, results: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    args = {**cfg.model_dump(mode="json"), "out": str(out)}
    Path(out).write_text(json.dumps({"args": args, "runs": results, "summary": _summary(results)}, indent=1))
