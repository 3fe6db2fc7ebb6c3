"""The benchmark's data: the frozen foundation model (pretrained once per run, plain loop) and the
log as numpy columns with its per-row vectors (:class:`Log`: UR, IR, CR(u,i) of that model)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np


def pretrain(spec, table, split, args):
    """Fit the foundation model once (plain loop); returns (model, encoder, cr layer)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pretrain import FeatureEncoder, FoundationModel, PretrainConfig
    from pretrain.data import to_arrays
    from pretrain.replica import fit_plain

    tr = table.filter(pc.is_in(table["ds"], pa.array(split["train"])))
    va = table.filter(pc.is_in(table["ds"], pa.array(split["valid"])))
    enc = FeatureEncoder.fit(tr, spec)
    cfg = PretrainConfig.model_validate(
        {
            "train": {
                "epochs": args.fm_epochs,
                "seed": 0,
                "torch_threads": args.threads,
                "patience": 1,
                "diagnostics": False,
            }
        }
    )
    t0 = time.perf_counter()
    st = fit_plain(cfg.model, cfg.train, spec, enc.vocab_sizes, to_arrays(enc.encode(tr)), to_arrays(enc.encode(va)))
    model = FoundationModel(cfg.model, spec, enc.vocab_sizes)
    model.load_state_dict(st["best_state"])
    model.eval()
    print(
        f"foundation model: {tr.num_rows} train rows, {st['epoch']} epoch(s), {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return model, enc, model.default_cr_layer


def sample_vectors(model, enc, table, cr_layer: str) -> dict[str, np.ndarray]:
    """Per log row: UR [N, d_u], IR [N, d_i], CR(u,i) [N, d_c] of the frozen model."""
    import torch

    from pretrain.data import iter_batches, to_arrays

    arrays = to_arrays(enc.encode(table))
    out = defaultdict(list)
    with torch.no_grad():
        for b in iter_batches(arrays, 4096):
            r = model.representations(b, ["user_tower", "item_tower", cr_layer])
            out["ur"].append(r["user_tower"].numpy())
            out["ir"].append(r["item_tower"].numpy())
            out["cr"].append(r[cr_layer].numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


@dataclass
class Log:
    """The log as numpy columns, sorted by time."""

    user: np.ndarray
    item: np.ndarray
    t: np.ndarray  # seconds
    ds: np.ndarray
    scenario: np.ndarray
    pos: np.ndarray  # bool
    vec: dict[str, np.ndarray]


def as_log(table, spec, vecs) -> Log:
    t = table["event_time"].cast("int64").to_numpy() / 1e6  # timestamp[us] -> seconds
    task = spec.tasks[0]
    lab = table[task].to_numpy(zero_copy_only=False)
    return Log(
        np.asarray(table["user_id"].to_pylist(), dtype=object),
        np.asarray(table["item_id"].to_pylist(), dtype=object),
        t.astype(np.float64),
        np.asarray(table["ds"].to_pylist(), dtype=object),
        table["scenario"].to_numpy(zero_copy_only=False).astype(np.int64),
        np.nan_to_num(lab) == 1.0,
        vecs,
    )


def l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)
