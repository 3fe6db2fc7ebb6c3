"""The rollover study's downstream evaluation: v1's test rows joined with each feed's tables
(old, raw new, aligned, frozen, variants), one downstream model per seed trained on v1's
vectors and scoring every feed with the same weights, for ``benchmarks/rollover.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmarks.rollover_fits import TABLES, VARIANTS
from contracts import RunLayout
from datasources import read_log_spec
from downstream import DownstreamConfig
from downstream.data import ScenarioData, build_scenario_data, read_splits, resolve_scenario, select_rows
from downstream.evaluate import ranking_builder
from downstream.train import fit, predict
from pretrain.metrics import auc

if TYPE_CHECKING:
    from contracts import CheckpointManifest
    from pipelines.state import RunState


@dataclass
class DownstreamEval:
    """What the study reports of the downstream side: the scores to compare, per feed and seed."""

    preds: dict[str, list[np.ndarray]]  # feed -> per seed, the click scores of the test rows
    y: np.ndarray  # the click labels of those rows
    vanilla_aucs: list[float]
    scenario: int | None
    train_rows: int
    test_rows: int
    coverage: dict[str, object]


def feed_tables(pairs: dict[str, Path], variants: bool) -> dict[str, tuple[dict, str | None]]:
    """Per feed: the table path per representation and the model version its reads expect."""
    feeds: dict[str, tuple[dict, str | None]] = {}
    for pname, root in pairs.items():
        nt = RunLayout(root).root / "tables"
        tag = "" if pname == "scratch" else "warm_"
        feeds[f"{tag}raw_new"] = ({n: nt / n for n in TABLES}, None)  # a silent break: same dims, no check
        feeds[f"{tag}aligned_new"] = ({n: nt / f"{n}__aligned_v1" for n in TABLES}, "v1")
        feeds[f"{tag}frozen_aligned_new"] = ({n: nt / f"{n}__frozen_v1" for n in TABLES}, "v1")
        if variants:
            for v in VARIANTS:
                feeds[f"{tag}{v}_aligned_new"] = ({n: nt / f"{n}__{v}_v1" for n in TABLES}, "v1")
    return feeds


def evaluate(
    args: argparse.Namespace,
    work: Path,
    pairs: dict[str, Path],
    old_tables: Path,
    st_old: RunState,
    secs: dict[str, float],
) -> DownstreamEval:
    """Join every feed, then train (or load from ``work/_downstream_models``) the transfer
    model per seed in ``args.seeds`` and the vanilla one for the first ``args.vanilla_seeds``;
    the join and training times go to ``secs``."""
    sp = st_old.split
    log = RunLayout(work / "v1").log
    spec = read_log_spec(log)
    raw = read_splits(log, sp["train"], sp["valid"], sp["test"])
    if args.scenario is not None:
        scenario = resolve_scenario(raw["train"], spec, args.scenario)
    else:
        scenario = resolve_scenario(raw["train"], spec, None) if args.eval == "smallest" else None
    tables = {k: select_rows(v, scenario, "all") for k, v in raw.items()}
    dcfg = DownstreamConfig(epochs=args.downstream_epochs, threads=2, adapter=args.adapter, scenario=scenario)
    feeds = feed_tables(pairs, not args.no_variants)
    t2 = time.perf_counter()
    data_old = build_scenario_data(tables, spec, {n: old_tables / n for n in TABLES}, expect_model_version="v1")
    one = tables["test"].slice(0, 1)  # fed tables only matter on the test rows: skip joining train/valid again
    built = {
        k: build_scenario_data(
            {"train": one, "valid": one, "test": tables["test"]},
            spec,
            paths,
            encoder=data_old.encoder,
            expect_model_version=mv,
        )
        for k, (paths, mv) in feeds.items()
    }
    evals = {"old": data_old.test, **{k: b.test for k, b in built.items()}}
    secs["join"] = time.perf_counter() - t2
    print(
        f"rollover: {len(evals)} feeds joined in {secs['join']:.0f} s; {data_old.train.num_rows} train rows",
        file=sys.stderr,
        flush=True,
    )
    k_click = data_old.tasks.index("click")
    mask = data_old.test.batch["label_mask"].numpy()[:, k_click]
    y = data_old.test.batch["labels"].numpy()[mask, k_click]
    preds: dict[str, list[np.ndarray]] = {k: [] for k in evals}
    t3 = time.perf_counter()
    cache = work / "_downstream_models"  # the models depend on v1 and the seed only: reused by --new-seed reruns
    cache.mkdir(exist_ok=True)
    van_aucs = []
    for i, seed in enumerate(args.seeds):
        kinds = [("transfer", TABLES, dcfg.adapter)] + ([("vanilla", [], "none")] if i < args.vanilla_seeds else [])
        for kind, reps, adapter in kinds:
            model = _model(cache, kind, seed, reps, adapter, st_old.manifest, data_old, dcfg)
            if kind == "transfer":
                for k, split_ in evals.items():
                    preds[k].append(predict(model, split_)[mask, k_click])
            else:
                van_aucs.append(auc(y, predict(model, data_old.test)[mask, k_click]))
        print(f"rollover: seed {seed} done at {time.perf_counter() - t3:.0f} s", file=sys.stderr, flush=True)
    secs["downstream"] = time.perf_counter() - t3
    return DownstreamEval(
        preds=preds,
        y=y,
        vanilla_aucs=van_aucs,
        scenario=scenario,
        train_rows=data_old.train.num_rows,
        test_rows=int(mask.sum()),
        coverage={"old": data_old.coverage, "aligned_new": built["aligned_new"].coverage},
    )


def _model(
    cache: Path,
    kind: str,
    seed: int,
    reps: list[str],
    adapter: str,
    v1m: CheckpointManifest,
    data_old: ScenarioData,
    dcfg: DownstreamConfig,
) -> torch.nn.Module:
    """The ``kind`` model of ``seed``: loaded from ``cache`` when an earlier run trained it
    on the same v1 (``v1m``: its manifest), config and rows, else trained and saved there."""
    key = hashlib.sha256(
        json.dumps(
            [
                kind,
                seed,
                v1m.config_hash,
                v1m.data_version,
                str(v1m.created_at),
                dcfg.model_dump(mode="json"),
                data_old.train.num_rows,
            ]
        ).encode()
    )
    path = cache / f"{kind}_{key.hexdigest()[:16]}.pt"
    build = ranking_builder(data_old, dcfg, reps, adapter)
    if path.is_file():
        model = build()
        model.load_state_dict(torch.load(path))
    else:
        kw = dict(seed=seed, epochs=dcfg.epochs, lr=dcfg.lr, batch_size=dcfg.batch_size, patience=dcfg.patience)
        model, _ = fit(build, data_old.train, data_old.valid, data_old.test, data_old.tasks, **kw)
        torch.save(model.state_dict(), path)
    return model
