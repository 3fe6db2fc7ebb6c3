"""Both experiments end to end on the tiny synthetic run (1-2 seeds, few epochs)."""

import json
import math
from datetime import datetime, timezone

import pytest
import torch

from contracts import CheckpointManifest, ConfigError
from datasources import read_log
from downstream import DownstreamConfig
from downstream.experiments import TransferExperimentConfig, main, run_transfer_experiment
from pretrain import FeatureEncoder, FoundationModel, ModelConfig
from pretrain.checkpoint import save_checkpoint
from tests.downstream.synth import DAYS, make_run


def _checkpoint(root, log, spec):
    enc = FeatureEncoder.fit(read_log(log, DAYS[:2]), spec)
    cfg = ModelConfig(cross_layers=1, mlp_dims=[16, 8], d_model=8, num_heads=2, user_layers=1, ur_dim=8, ir_dim=8)
    torch.manual_seed(0)
    model = FoundationModel(cfg, spec, enc.vocab_sizes)
    manifest = CheckpointManifest(
        model_version="m1", created_at=datetime.now(timezone.utc), dataset=spec, model_config_data=cfg.model_dump(),
        config_hash="x", data_version="test", vocab_sizes=enc.vocab_sizes, layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
    )
    return save_checkpoint(root / "checkpoints", model, enc, manifest)


def test_transfer_experiment_writes_table_and_json(tmp_path):
    log, spec = make_run(tmp_path, rows_per_day=600)
    ckpt = _checkpoint(tmp_path, log, spec)
    cfg = TransferExperimentConfig(
        downstream=DownstreamConfig(epochs=2, batch_size=256, seeds=[0]), adapters=["linear"], module_k=[0, 2]
    )
    out = run_transfer_experiment(log, tmp_path, tmp_path / "report", cfg, checkpoint=ckpt)
    json.dumps(out)
    for key in ("dataset", "seeds", "scenarios", "scenarios_improved", "small_scenario", "vanilla_auc",
                "best_transfer_auc", "best_method", "lift"):
        assert key in out
    assert out["seeds"] == [0] and out["scenarios"] == [0, 1]
    methods = out["table"]["0"]["methods"]
    assert set(methods) == {"vanilla", "linear:UR+IR+CR", "gate:UR", "gate:UR+IR", "gate:UR+IR+CR", "gate+cross:UR+IR+CR",
                            "model:retrieval", "module:k=0", "module:k=2"}
    assert all(not math.isnan(m["test_auc"]["click"]) for m in methods.values())
    assert out["lift"] == out["best_transfer_auc"] - out["vanilla_auc"]
    md = (tmp_path / "report" / "transfer.md").read_text()
    assert "| gate:UR+IR |" in md and "± " in md
    assert (tmp_path / "report" / "transfer_auc.png").stat().st_size > 1000


def test_rankup_experiment_reports_auc_and_erank_per_layer(tmp_path, capsys):
    log, _ = make_run(tmp_path, rows_per_day=500)
    conf = tmp_path / "rankup.yaml"
    conf.write_text(
        "downstream: {epochs: 3, batch_size: 256, representations: [user_ur, item_ir]}\n"
        "model: {d_model: 16, num_tokens: 8, emb_dim: 4}\n"
        "erank_rows: 64\n"
    )
    out = main(["rankup", "--root", str(tmp_path), "--config", str(conf), "--seeds", "1", "--epochs", "1"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("dataset", "seeds", "rankmixer_auc", "rankup_auc", "rankmixer_erank_last", "rankup_erank_last"):
        assert printed[key] == out[key]
    assert out["seeds"] == [0]
    assert set(out["variants"]) == {"rankmixer", "+permutation_split", "+multi_embedding+global", "+crossed_token",
                                    "+task_tokens", "+preln_swiglu", "rankup"}
    assert list(out["variants"]["rankup"]["erank"]) == ["tokenizer", "L1.mixer", "L1.ffn", "L2.mixer", "L2.ffn"]
    # per-sample T x D matrices with T = 8: effective rank lies in [1, 8]
    assert 1 <= out["rankup_erank_last"] <= 8 and 1 <= out["rankmixer_erank_last"] <= 8
    assert out["crossed_pair"] == ["user_ur", "item_ir"]
    report = tmp_path / "reports" / "experiments"
    assert (report / "rankup_erank.png").stat().st_size > 1000
    assert "| rankup |" in (report / "rankup.md").read_text()


def test_experiment_config_typo_is_a_clear_error(tmp_path):
    conf = tmp_path / "t.yaml"
    conf.write_text("module_kk: [1]\n")
    with pytest.raises(ConfigError, match="module_kk: unknown key"):
        main(["transfer", "--root", str(tmp_path), "--config", str(conf)])


def _small_transfer_conf(tmp_path, extra: str = ""):
    conf = tmp_path / "t.yaml"
    conf.write_text(
        "downstream: {epochs: 1, batch_size: 256}\n"
        "adapters: [linear]\ncross_adapters: []\nmodule_k: []\nmodel_level: false\n" + extra
    )
    return conf


def test_experiments_use_the_given_split_not_downstream_day_counts(tmp_path, capsys):
    """`lfm4ads experiment` passes the run config's resolved split; the default 1/1 day
    counts of DownstreamConfig would test on the last day only (the bug of issue 6)."""
    log, spec = make_run(tmp_path, rows_per_day=300)
    conf = _small_transfer_conf(tmp_path)
    split = {"train": DAYS[:1], "valid": DAYS[1:2], "test": DAYS[2:]}
    out = main(["transfer", "--root", str(tmp_path), "--config", str(conf), "--seeds", "1"], split=split)
    assert out["days"] == split
    test_rows = read_log(log, DAYS[2:])
    small = out["small_scenario"]
    n_small = sum(1 for s in test_rows["scenario"].to_pylist() if s == small)
    assert out["table"][str(small)]["rows"]["test"] == n_small
    # the same split from date edges on the command line
    flags = main(["transfer", "--root", str(tmp_path), "--config", str(conf), "--seeds", "1",
                  "--valid-start", DAYS[1], "--test-start", DAYS[2]])
    assert flags["days"] == split
    ru = tmp_path / "ru.yaml"
    ru.write_text("downstream: {epochs: 1, batch_size: 256, representations: []}\n"
                  "model: {d_model: 16, num_tokens: 8, emb_dim: 4, crossed_token: false}\nerank_rows: 16\n")
    r = main(["rankup", "--root", str(tmp_path), "--config", str(ru), "--seeds", "1"], split=split)
    assert r["rows"]["test"] == test_rows.num_rows
    with pytest.raises(ValueError, match="give both"):
        main(["transfer", "--root", str(tmp_path), "--config", str(conf), "--valid-start", DAYS[1]])
    with pytest.raises(ValueError, match="no days for"):
        main(["transfer", "--root", str(tmp_path), "--config", str(conf), "--valid-start", DAYS[1],
              "--test-start", "2027-01-01"])


def test_per_layer_rows_and_gate_variants(tmp_path):
    log, spec = make_run(tmp_path, rows_per_day=300)
    other = tmp_path / "layer_b"
    make_run(other, rows_per_day=10)  # publishes its own UR/IR/CR tables under other/tables
    cfg = TransferExperimentConfig(
        downstream=DownstreamConfig(epochs=1, batch_size=256, seeds=[0]), adapters=[], cross_adapters=[],
        module_k=[], model_level=False, scenarios=[0],
        gate_variants={"gate[cross]": {"gate_mode": "cross", "gate_zero_init": True}},
    )
    out = run_transfer_experiment(log, tmp_path, tmp_path / "r", cfg, layer_roots={"ad.cross_1": other})
    methods = out["table"]["0"]["methods"]
    assert {"gate[cross]", "linear:UR+IR+CR@ad.cross_1", "gate:UR+IR+CR@ad.cross_1"} <= set(methods)
    assert "| linear:UR+IR+CR@ad.cross_1 |" in (tmp_path / "r" / "transfer.md").read_text()
    with pytest.raises(ValueError, match="gate_variants.bad"):
        TransferExperimentConfig(gate_variants={"bad": {"gate_mode": "diagonal"}})
    with pytest.raises(ValueError, match="gate_variants.typo"):
        TransferExperimentConfig(gate_variants={"typo": {"gate_mod": "cross"}})
