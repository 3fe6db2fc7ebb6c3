"""The RankUp defaults study (issue 15.6): RankMixer and RankUp variants trained on every
scenario pooled, compared on validation AUC, test AUC and effective rank.

``python -m studies rankup-defaults``; see :func:`study`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from downstream.rankup import RankUpConfig, build_ranker


def study(
    root: Path,
    valid_start: str,
    test_start: str,
    *,
    seeds: int = 3,
    epochs: int = 20,
    patience: int = 3,
    lr: float = 2e-3,
    batch_size: int = 512,
    erank_rows: int = 1024,
    variants: list[str] | None = None,
    skip_defaults: bool = False,
    out: Path | None = None,
) -> dict:
    """``python -m studies rankup-defaults --root ROOT --valid-start D --test-start D [--seeds N]
    [--epochs N] [--lr X] [--variant NAME=JSON ...] [--skip-defaults] [--out FILE]``.

    Trains RankMixer and RankUp variants (``NAME=JSON``: RankUpConfig overrides on the
    default RankUp, or on RankMixer with ``"__rankmixer__": true``; ``rankmixer`` and
    ``rankup`` run unless ``skip_defaults``; ``lr``/``epochs`` keys in the JSON change
    the training instead) on every scenario pooled, the same data, split and training as
    ``lfm4ads experiment rankup``. Prints per variant: validation click AUC (the selection
    metric), test AUC, effective rank after the last layer (test rows), params. Last stdout
    line: JSON {variant: {...}}."""
    from contracts import RunLayout, split_days
    from datasources import log_days, read_log_spec
    from downstream.data import build_scenario_data, read_splits, rep_table_paths, select_rows
    from downstream.evaluate import torch_threads
    from downstream.train import fit
    from pretrain import effective_rank

    layout = RunLayout(root)
    split = split_days(log_days(layout.log), valid_start=valid_start, test_start=test_start)
    tr, va, te = split["train"], split["valid"], split["test"]
    spec = read_log_spec(layout.log)
    raw = read_splits(layout.log, tr, va, te)
    tables = {k: select_rows(v, None, "all") for k, v in raw.items()}
    reps = ["user_ur", "item_ir", "user_cr", "item_cr"]
    data = build_scenario_data(tables, spec, rep_table_paths(layout.root, reps))
    canon = spec.canonical()
    runs_of: dict[str, dict] = {} if skip_defaults else {"rankmixer": {"__rankmixer__": True}, "rankup": {}}
    for v in variants or []:
        name, sep, js = v.partition("=")
        if not sep:
            raise ValueError(f"--variant {v!r}: expected NAME=JSON")
        runs_of[name] = json.loads(js)
    results: dict[str, dict] = {}
    print(f"rows train/valid/test {data.train.num_rows}/{data.valid.num_rows}/{data.test.num_rows}", flush=True)
    with torch_threads(1):
        for name, over in runs_of.items():
            over = dict(over)
            v_lr, v_epochs = over.pop("lr", lr), over.pop("epochs", epochs)
            cfg = (
                RankUpConfig.rankmixer(**{k: v for k, v in over.items() if k != "__rankmixer__"})
                if over.get("__rankmixer__")
                else RankUpConfig(**over)
            )
            runs = []
            for seed in range(seeds):
                t0 = time.perf_counter()

                def build(cfg=cfg):
                    return build_ranker(cfg, data, canon)

                model, res = fit(
                    build,
                    data.train,
                    data.valid,
                    data.test,
                    data.tasks,
                    seed=seed,
                    epochs=v_epochs,
                    lr=v_lr,
                    batch_size=batch_size,
                    patience=patience,
                )
                model.eval()
                model.record_states = True
                with torch.no_grad():
                    model(data.test.take(torch.arange(min(erank_rows, data.test.num_rows))))
                er = effective_rank(model.states[-1][1])
                runs.append(
                    {
                        "valid": res.valid_auc,
                        "test": res.test_auc[data.tasks[0]],
                        "erank": er,
                        "epochs": res.epochs,
                        "best_epoch": res.best_epoch,
                    }
                )
                print(
                    f"{name} seed={seed}: valid {res.valid_auc:.4f} test {runs[-1]['test']:.4f} erank {er:.2f} "
                    f"({res.best_epoch}/{res.epochs} ep, {time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
            params = sum(q.numel() for q in model.parameters())
            results[name] = {k: float(np.mean([r[k] for r in runs])) for k in ("valid", "test", "erank")}
            results[name].update(
                test_std=float(np.std([r["test"] for r in runs])),
                valid_std=float(np.std([r["valid"] for r in runs])),
                params=params,
                runs=runs,
            )
            if out:
                out.write_text(json.dumps(results, indent=1))
    print("| variant | params | valid AUC | test AUC | erank last |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['params']} | {r['valid']:.4f} ± {r['valid_std']:.4f} | {r['test']:.4f} ± "
            f"{r['test_std']:.4f} | {r['erank']:.2f} |"
        )
    print(json.dumps({k: {kk: v[kk] for kk in ("valid", "test", "erank", "params")} for k, v in results.items()}))
    return results
