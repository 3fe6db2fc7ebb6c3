"""Downstream vanilla vs transfer on a tiny log whose label lives in the published vectors."""

import json
import math

import pytest

from contracts import ConfigError, SplitConfig, load_config, validate_config
from downstream import DownstreamConfig, train_and_evaluate
from tests.downstream.synth import DAYS, make_run


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds_run")
    make_run(root)
    return root


@pytest.mark.parametrize("adapter,crossed", [("linear", False), ("gate_linear", False), ("gate", True)])
def test_transfer_beats_vanilla_when_vectors_carry_the_signal(run_root, adapter, crossed):
    # the label is <p_u, q_i>: a gate alone cannot pass an interaction (see docs), the
    # concatenation or the crossed token Proj(z_u * z_i) can
    cfg = DownstreamConfig(
        scenario=0,
        adapter=adapter,
        crossed_token=crossed,
        representations=["user_ur", "item_ir"],
        epochs=8,
        batch_size=128,
        seeds=[0],
    )
    out = train_and_evaluate(run_root / "log", run_root, cfg, split=SplitConfig(test_days=1))
    json.dumps(out)  # JSON-able
    assert out["days"] == {"train": DAYS[:2], "valid": [DAYS[2]], "test": [DAYS[3]]}
    assert out["tasks"] == ["click", "conversion"]
    assert 0.85 < out["coverage"]["user_ur"] < 0.95 and out["coverage"]["item_ir"] == 1.0
    van, tra = out["vanilla"]["test_auc"]["click"], out["transfer"]["test_auc"]["click"]
    assert tra > van + 0.1, (van, tra)
    assert out["lift"]["click"] == pytest.approx(tra - van)
    assert not math.isnan(out["transfer"]["test_auc"]["conversion"])


def test_cold_start_users_are_served_by_their_published_vectors(tmp_path):
    # test-day users never appear in training: their id embeddings are OOV
    make_run(tmp_path, signal="cold")
    cfg = DownstreamConfig(
        scenario=1,
        adapter="gate_linear",
        representations=["user_ur", "item_ir", "user_cr"],
        epochs=6,
        batch_size=128,
        seeds=[0],
    )
    out = train_and_evaluate(tmp_path / "log", tmp_path, cfg, split=SplitConfig(test_days=1))
    van, tra = out["vanilla"]["test_auc"]["click"], out["transfer"]["test_auc"]["click"]
    assert tra > van + 0.05, (van, tra)


def test_smallest_scenario_default_and_explicit_days(run_root):
    cfg = DownstreamConfig(representations=[], epochs=1, seeds=[0, 1])
    out = train_and_evaluate(run_root / "log", None, cfg, train_days=DAYS[:1], valid_days=DAYS[1:2], test_days=DAYS[3:])
    assert out["scenario"] in (0, 1) and "transfer" not in out
    per_seed = [c["test_auc"]["click"] for c in out["vanilla"]["per_seed"]]
    assert len(per_seed) == 2 and per_seed[0] != per_seed[1]  # the seed reaches the fit
    # mean and sample std (ddof=1) of two values, from the per-seed AUCs
    assert out["vanilla"]["test_auc"]["click"] == pytest.approx((per_seed[0] + per_seed[1]) / 2)
    assert out["vanilla"]["test_auc_std"]["click"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2))


def test_bad_inputs_are_clear(run_root, tmp_path):
    with pytest.raises(ValueError, match="dim is 4, the consumer expects 5"):
        train_and_evaluate(run_root / "log", run_root, DownstreamConfig(scenario=0, expect_dims={"user_ur": 5}))
    with pytest.raises(ValueError, match="model_version"):
        train_and_evaluate(run_root / "log", run_root, DownstreamConfig(scenario=0, expect_model_version="m2"))
    with pytest.raises(ValueError, match="scenario 7"):
        train_and_evaluate(run_root / "log", run_root, DownstreamConfig(scenario=7))
    with pytest.raises(ValueError, match="more than one split"):
        train_and_evaluate(run_root / "log", None, DownstreamConfig(representations=[]), DAYS[:2], DAYS[1:3], DAYS[3:])
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: 0\nadaptor: gate\n")
    with pytest.raises(ConfigError, match="adaptor: unknown key"):
        load_config(bad, DownstreamConfig)


def test_shipped_config_loads_with_defaults():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "downstream.yaml", DownstreamConfig)
    assert cfg == DownstreamConfig()


def test_summarise_reports_the_validation_auc_methods_are_chosen_on():
    import numpy as np

    from downstream.evaluate import summarise
    from downstream.train import FitResult

    runs = [
        FitResult(0.61, {"click": 0.70}, 4, 2),
        FitResult(0.67, {"click": 0.72}, 5, 3),
        FitResult(0.64, {"click": float("nan")}, 3, 1),
    ]
    s = summarise(runs, ["click"])
    assert s["valid_auc"] == pytest.approx(np.mean([0.61, 0.67, 0.64]))
    assert s["valid_auc_std"] == pytest.approx(np.std([0.61, 0.67, 0.64], ddof=1))
    assert s["test_auc"]["click"] == pytest.approx(0.71)  # NaN seeds left out of the test mean
    assert [r["valid_auc"] for r in s["per_seed"]] == [0.61, 0.67, 0.64]


def test_the_split_is_not_a_downstream_key():
    # one split config (contracts.SplitConfig): the old day counts are refused by name
    with pytest.raises(ConfigError, match="test_days: the time split is declared once, in `split`"):
        validate_config({"test_days": 1}, DownstreamConfig)
