"""The one training core: pretraining (``pretrain.replica.fit_plain``) and downstream training
(``downstream.train.fit``) stop by the same early-stopping rule, run the same loop, and are
bit-reproducible on CPU; the GPU flag fails clearly on a machine without a GPU."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from torch import nn

from contracts import ConfigError
from pretrain import FeatureEncoder, PretrainConfig
from pretrain.data import to_arrays
from pretrain.device import DeviceUnavailable, check_device_config
from pretrain.loop import should_stop
from pretrain.replica import fit_plain
from tests.pretrain.toy import SPEC, toy_table

NO_GPU = not torch.cuda.is_available()


def _expected_epochs(epochs: int, patience: int) -> int:
    """Written from the rule: a frozen model's score never improves after epoch 1, so it stops
    at the epoch where the count of epochs in a row without gain reaches max(1, patience)."""
    bad = 0
    for epoch in range(1, epochs + 1):
        if epoch > 1:
            bad += 1
            if bad >= max(1, patience):
                return epoch
    return epochs


def _pretrain(epochs: int, patience: int):
    tr, va = toy_table(300, seed=1), toy_table(200, seed=2)
    enc = FeatureEncoder.fit(tr, SPEC)
    # lr 0: the weights never change, so validation AUC is the same every epoch: no gain after epoch 1
    cfg = PretrainConfig.model_validate(
        {"train": {"epochs": epochs, "patience": patience, "lr": 1e-30, "batch_size": 128, "diagnostics": False}}
    )
    st = fit_plain(cfg.model, cfg.train, SPEC, enc.vocab_sizes, to_arrays(enc.encode(tr)), to_arrays(enc.encode(va)))
    return int(st["epoch"]), int(st["best_epoch"])


def _downstream(epochs: int, patience: int):
    from downstream.data import Split
    from downstream.train import fit

    enc = FeatureEncoder.fit(toy_table(300, seed=1), SPEC)
    splits = [Split(enc.encode(toy_table(n, seed=s)), []) for n, s in ((300, 1), (200, 2), (200, 3))]

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(enc.vocab_sizes["user_id"], len(SPEC.tasks))

        def forward(self, b):
            return self.emb(b["user_id"])

    _, res = fit(Tiny, *splits, SPEC.tasks, seed=0, epochs=epochs, lr=1e-30, batch_size=128, patience=max(1, patience))
    return res.epochs, res.best_epoch


@pytest.mark.parametrize("trainer", [_pretrain, _downstream], ids=["pretrain", "downstream"])
@pytest.mark.parametrize("patience", [1, 2])
def test_one_early_stopping_rule_for_pretraining_and_downstream(trainer, patience):
    epochs = 6
    ran, best = trainer(epochs, patience)
    assert ran == _expected_epochs(epochs, patience) == 1 + patience
    assert best == 1


def test_should_stop_rule():
    assert [should_stop(b, 2) for b in range(4)] == [False, False, True, True]
    assert should_stop(1, 0) and should_stop(1, 1) and not should_stop(0, 0)


def test_plain_pretraining_is_reproducible_bit_for_bit():
    """Same config, same rows: same weights and metrics (seeded, deterministic ops, fixed threads)."""
    tr, va = toy_table(400, seed=5), toy_table(200, seed=6)
    enc = FeatureEncoder.fit(tr, SPEC)
    cfg = PretrainConfig.model_validate(
        {
            "train": {
                "epochs": 2,
                "batch_size": 64,
                "shuffle_window": 150,
                "pairwise_alpha": {"click": 0.7},
                "grad_clip": 1.0,
            }
        }
    )
    runs = [
        fit_plain(cfg.model, cfg.train, SPEC, enc.vocab_sizes, to_arrays(enc.encode(tr)), to_arrays(enc.encode(va)))
        for _ in range(2)
    ]
    assert [h["train_loss"] for h in runs[0]["history"]] == [h["train_loss"] for h in runs[1]["history"]]
    assert [h["valid_auc"] for h in runs[0]["history"]] == [h["valid_auc"] for h in runs[1]["history"]]
    for k, v in runs[0]["best_state"].items():
        assert torch.equal(v, runs[1]["best_state"][k]), k


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_gpu_flag_fails_clearly_without_a_gpu(tmp_path):
    with pytest.raises(DeviceUnavailable, match=r"pretrain\.train\.use_gpu: true, but no CUDA GPU is visible"):
        check_device_config(True)
    with pytest.raises(ConfigError, match=r"amp: bf16 needs pretrain\.train\.use_gpu: true"):
        check_device_config(False, "bf16")
    # the training entry points refuse before reading anything (no log exists at all here)
    cfg = PretrainConfig.model_validate({"train": {"use_gpu": True}})
    tr = toy_table(50)
    enc = FeatureEncoder.fit(tr, SPEC)
    with pytest.raises(DeviceUnavailable, match="use_gpu"):
        fit_plain(cfg.model, cfg.train, SPEC, enc.vocab_sizes, to_arrays(enc.encode(tr)), to_arrays(enc.encode(tr)))
    from pretrain.train import train_on_tables

    with pytest.raises(DeviceUnavailable, match="use_gpu"):
        train_on_tables(cfg, SPEC, tr, tr, tmp_path, "toy")
    assert not list(tmp_path.iterdir()), "nothing written"
    from downstream.data import Split
    from downstream.train import fit

    s = Split(enc.encode(tr), [])
    with pytest.raises(DeviceUnavailable, match=r"downstream\.use_gpu"):
        fit(
            lambda: nn.Linear(1, 1),
            s,
            s,
            s,
            SPEC.tasks,
            seed=0,
            epochs=1,
            lr=1e-3,
            batch_size=8,
            patience=1,
            use_gpu=True,
        )


def test_downstream_combined_pair_loss_is_selectable_and_finite_without_positives():
    from pydantic import ValidationError

    from downstream.config import DownstreamConfig
    from downstream.data import Split
    from downstream.train import fit, train_options

    cfg = DownstreamConfig.model_validate({"pairwise_alpha": {"click": 0.6}, "grad_clip": 5.0})
    assert train_options(cfg)["pairwise_alpha"] == {"click": 0.6}
    with pytest.raises(ValidationError, match="pairwise_alpha"):
        DownstreamConfig.model_validate({"pairwise_alpha": {"click": 1.5}})
    tr = toy_table(200, seed=1)
    no_pos = tr.set_column(tr.column_names.index("click"), "click", pa.array([0.0] * 200, pa.float32()))
    enc = FeatureEncoder.fit(tr, SPEC)
    train, valid = Split(enc.encode(no_pos), []), Split(enc.encode(toy_table(100, seed=2)), [])

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(enc.vocab_sizes["user_id"], len(SPEC.tasks))

        def forward(self, b):
            return self.emb(b["user_id"])

    model, res = fit(
        Tiny,
        train,
        valid,
        valid,
        SPEC.tasks,
        seed=0,
        epochs=2,
        lr=1e-2,
        batch_size=64,
        patience=2,
        **train_options(cfg),
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert res.epochs >= 1
    with pytest.raises(ValueError, match=r"pairwise_alpha: unknown task\(s\) \['purchase'\]"):
        fit(
            Tiny,
            train,
            valid,
            valid,
            SPEC.tasks,
            seed=0,
            epochs=1,
            lr=1e-2,
            batch_size=64,
            patience=1,
            pairwise_alpha={"purchase": 0.5},
        )
