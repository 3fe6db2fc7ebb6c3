"""Validation diagnostics saved with a checkpoint: per-task and per-scenario AUC / GAUC /
logloss, and effective ranks (papers.md section 2) of the sequence tokens after each
user-tower layer and of every named layer; plotted to ``erank.png``.

Falling effective rank of sequence tokens layer over layer is sequential collapse.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from pretrain.data import Arrays, num_rows, predict_logits, take
from pretrain.metrics import auc, effective_rank, gauc, logloss
from pretrain.model import FoundationModel


def task_metrics(
    model: FoundationModel, arrays: Arrays, tasks: list[str], scenario_ids: list[int], user_ids: np.ndarray | None
) -> dict[str, float]:
    """``{task}.auc|gauc|logloss|n`` overall and ``{task}.scenario_<id>.auc|...`` per scenario,
    over rows where the task is present (label_mask). GAUC groups by user."""
    logits = predict_logits(model, arrays)
    out: dict[str, float] = {}
    if logits.size == 0:
        return out
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    labels, mask, scen = arrays["labels"], arrays["label_mask"], arrays["scenario"]
    for t, task in enumerate(tasks):
        groups = [("", np.ones(len(scen), dtype=bool))]
        groups += [(f".scenario_{sid}", scen == k) for k, sid in enumerate(scenario_ids)]
        for suffix, rows in groups:
            sel = rows & mask[:, t]
            y, p = labels[sel, t], probs[sel, t]
            key = f"{task}{suffix}"
            out[f"{key}.n"] = float(sel.sum())
            if sel.sum() == 0:
                continue
            out[f"{key}.auc"] = auc(y, p)
            out[f"{key}.logloss"] = logloss(y, p)
            if user_ids is not None:
                out[f"{key}.gauc"] = gauc(y, p, user_ids[sel])
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


@torch.no_grad()
def effective_ranks(model: FoundationModel, arrays: Arrays, max_rows: int = 2000) -> dict[str, float]:
    """``seq.layer_<k>`` (k=0: tokenizer output) per-sample erank of [L, d] sequence tokens,
    averaged; ``<layer name>`` erank of the [N, dim] matrix of that layer's outputs."""
    was_training = model.training
    model.eval()
    batch = take(arrays, np.arange(min(max_rows, num_rows(arrays))))
    out: dict[str, float] = {}
    _, seq_tokens = model.user_representation(batch, keep_seq_tokens=True)
    for k, tok in enumerate(seq_tokens):
        out[f"seq.layer_{k}"] = effective_rank(tok)
    reps = model.representations(batch, model.layer_names())
    for name, rep in reps.items():
        out[name] = effective_rank(rep)
    model.train(was_training)
    return out


def erank_plot(eranks: dict[str, float], title: str = "") -> bytes:
    """PNG bytes: sequence-token erank per user-tower layer, and erank per named layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq = sorted((int(k.split("_")[-1]), v) for k, v in eranks.items() if k.startswith("seq.layer_"))
    layers = [(k, v) for k, v in eranks.items() if not k.startswith("seq.")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if seq:
        axes[0].plot([s[0] for s in seq], [s[1] for s in seq], marker="o")
    axes[0].set_xlabel("user-tower layer (0 = tokenizer)")
    axes[0].set_ylabel("effective rank of sequence tokens")
    axes[0].set_title("sequence tokens (collapse = falling curve)")
    axes[1].bar(range(len(layers)), [v for _, v in layers])
    axes[1].set_xticks(range(len(layers)), [k for k, _ in layers], rotation=60, ha="right", fontsize=8)
    axes[1].set_ylabel("effective rank over samples")
    axes[1].set_title("named layers")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
