"""Both experiments end to end on the tiny synthetic run (1-2 seeds, few epochs)."""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from contracts import CheckpointManifest, ConfigError
from datasources import read_log
from downstream import DownstreamConfig
from pretrain import FeatureEncoder, FoundationModel, ModelConfig
from pretrain.checkpoint import save_checkpoint
from studies import Study, TransferExperimentConfig, run_study, run_transfer_experiment
from studies.cli import main
from tests.downstream.synth import DAYS, make_run


def _checkpoint(root, log, spec):
    enc = FeatureEncoder.fit(read_log(log, DAYS[:2]), spec)
    cfg = ModelConfig(cross_layers=1, mlp_dims=[16, 8], d_model=8, num_heads=2, user_layers=1, ur_dim=8, ir_dim=8)
    torch.manual_seed(0)
    model = FoundationModel(cfg, spec, enc.vocab_sizes)
    manifest = CheckpointManifest(
        model_version="m1",
        created_at=datetime.now(timezone.utc),
        dataset=spec,
        model_config_data=cfg.model_dump(),
        config_hash="x",
        data_version="test",
        vocab_sizes=enc.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
    )
    return save_checkpoint(root / "checkpoints", model, enc, manifest)


def test_transfer_experiment_writes_table_and_json(tmp_path):
    log, spec = make_run(tmp_path, rows_per_day=600)
    ckpt = _checkpoint(tmp_path, log, spec)
    cfg = TransferExperimentConfig(
        downstream=DownstreamConfig(epochs=2, batch_size=256, seeds=[0]),
        adapters=["linear", "gate_linear"],
        module_k=[0, 2],
        workers=2,
    )
    out = run_transfer_experiment(log, tmp_path, tmp_path / "report", cfg, checkpoint=ckpt)
    json.dumps(out)
    for key in (
        "dataset",
        "seeds",
        "scenarios",
        "scenarios_improved",
        "small_scenario",
        "vanilla_auc",
        "picked_on",
        "picked_method",
        "lift",
        "mean_picked_test_auc",
        "mean_vanilla_test_auc",
        "default_method",
        "default_scenarios_improved",
        "wall_s",
        "valid_best_method",
        "upper_bound_best_on_test",
    ):
        assert key in out
    assert out["picked_on"] == "valid" and out["default_method"] == "gate_linear:UR+IR+CR"
    assert out["seeds"] == [0] and sorted(out["scenarios"]) == [0, 1]
    assert out["scenarios"][0] == out["small_scenario"]  # smallest first: the headline is measured first
    methods = out["table"]["0"]["methods"]
    assert set(methods) == {
        "vanilla",
        "linear:UR+IR+CR",
        "gate_linear:UR+IR+CR",
        "gate:UR",
        "gate:UR+IR",
        "gate:UR+IR+CR",
        "gate+cross:UR+IR+CR",
        "model:retrieval",
        "module:k=0",
        "module:k=2",
    }
    assert all(not math.isnan(m["test_auc"]["click"]) and not math.isnan(m["valid_auc"]) for m in methods.values())
    # the pick is the best mean validation AUC over the seeds' cells (reference: the per-seed numbers)
    for s, row in out["table"].items():
        means = {
            m: sum(c["valid_auc"] for c in v["per_seed"]) / len(v["per_seed"])
            for m, v in row["methods"].items()
            if m != "vanilla"
        }
        assert row["picked_method"] == max(means, key=means.get)
        assert out["picks"][s] == row["picked_method"]
    # the headline lift from the raw per-seed cells of the smallest scenario: the method with the
    # best mean validation AUC (never test) minus vanilla, test AUCs averaged over the seeds
    cells = out["table"][str(out["small_scenario"])]["methods"]

    def seed_mean(method: str, key) -> float:
        return sum(key(c) for c in cells[method]["per_seed"]) / len(cells[method]["per_seed"])

    by_valid = {m: seed_mean(m, lambda c: c["valid_auc"]) for m in cells if m != "vanilla"}
    picked = max(by_valid, key=by_valid.get)
    vanilla = seed_mean("vanilla", lambda c: c["test_auc"]["click"])
    assert out["picked_method"] == picked
    assert out["lift"] == pytest.approx(seed_mean(picked, lambda c: c["test_auc"]["click"]) - vanilla, abs=1e-12)
    assert out["mean_vanilla_test_auc"] == pytest.approx(
        sum(r["methods"]["vanilla"]["test_auc"]["click"] for r in out["table"].values()) / 2
    )
    assert out["cells"]["computed"] == 2 * 10 and out["cells"]["reused"] == 0
    md = (tmp_path / "report" / "transfer.md").read_text()
    assert "| gate:UR+IR |" in md and "± " in md and "(picked)" in md and "upper bound" in md
    assert (tmp_path / "report" / "transfer_auc.png").stat().st_size > 1000
    # the same inputs again: every cell is reused, the numbers are identical; two cells
    # removed are recomputed in this process (workers: 1) to the same numbers as the pool's
    folder = Path(out["cells"]["folder"])
    for name in ("vanilla.*.seed0.json", "module%3Ak%3D2.*.seed0.json"):
        (cell,) = (folder / "s1").glob(name)
        cell.unlink()
    again = run_transfer_experiment(
        log, tmp_path, tmp_path / "report", cfg.model_copy(update={"workers": 1}), checkpoint=ckpt
    )
    assert again["cells"] == {**out["cells"], "reused": 18, "computed": 2}
    assert again["table"] == out["table"]


def _summary(valid: float, test: float, std: float = 0.001) -> dict:
    return {"valid_auc": valid, "test_auc": {"click": test}, "test_auc_std": {"click": std}}


def test_selection_uses_validation_not_test():
    """A planted case: in scenario 0 the test-best row (gate) is not the validation-best
    row (linear); the headline must report linear's test AUC, and count the scenario as
    improved only if linear beats vanilla. Best-on-test appears only as the upper bound."""
    from studies.selection import headline

    rows = {
        "0": {
            "vanilla": _summary(0.60, 0.600, 0.005),
            "linear": _summary(0.70, 0.601, 0.005),
            "gate": _summary(0.65, 0.700, 0.005),
        },
        "1": {"vanilla": _summary(0.60, 0.600), "linear": _summary(0.61, 0.650), "gate": _summary(0.62, 0.640)},
    }
    h = headline(rows, "click", "0", "gate")
    assert h["picked_on"] == "valid" and h["picks"] == {"0": "linear", "1": "gate"}
    assert h["picked_method"] == "linear" and h["lift"] == pytest.approx(0.001)
    # 0: linear +0.001 is not above one pooled std (0.005); 1: gate +0.04 is above 0.001
    assert h["scenarios_improved"] == 1
    assert h["mean_picked_test_auc"] == pytest.approx((0.601 + 0.640) / 2)
    assert h["mean_vanilla_test_auc"] == pytest.approx(0.600)
    assert h["default_method"] == "gate" and h["default_scenarios_improved"] == 2
    assert h["default_lift"] == pytest.approx(0.100)
    # mean validation AUC over scenarios: linear 0.655, gate 0.635
    assert h["valid_best_method"] == "linear"
    ub = h["upper_bound_best_on_test"]
    assert ub["picks"] == {"0": "gate", "1": "linear"} and ub["lift"] == pytest.approx(0.100)
    assert ub["scenarios_improved"] == 2 and "upper bound" in ub["note"]


def test_killed_transfer_experiment_resumes_from_finished_cells(tmp_path):
    """A real kill (SIGKILL of the command line process after its first finished cells):
    the run started again reuses exactly the cells that were on disk and computes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    make_run(tmp_path, rows_per_day=300)
    conf = tmp_path / "t.yaml"
    conf.write_text(
        "downstream: {epochs: 2, batch_size: 256, seeds: [0, 1]}\n"
        "adapters: [linear, gate_linear]\ncross_adapters: []\nmodule_k: []\nmodel_level: false\n"
        "workers: 1\n"
    )
    argv = ["transfer", "--root", str(tmp_path), "--config", str(conf), "--out", str(tmp_path / "r")]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studies", *argv],
        env=env,
        cwd=os.getcwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    cells: list = []
    while time.time() < deadline and proc.poll() is None:
        cells = [p for p in (tmp_path / "r" / "cells").glob("*/s*/*.json")]
        if len(cells) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.relative_to(tmp_path / "r") for p in (tmp_path / "r" / "cells").glob("*/s*/*.json")}
    assert 3 <= len(finished) < 2 * 6 * 2, proc.stderr.read().decode()[-2000:]
    before = {p: (tmp_path / "r" / p).read_text() for p in finished}
    out = main(argv)
    total = 2 * 6 * 2  # scenarios x rows (vanilla, linear, gate_linear, gate:UR, UR+IR, UR+IR+CR) x seeds
    assert out["cells"]["reused"] == len(finished) and out["cells"]["computed"] == total - len(finished)
    assert all((tmp_path / "r" / p).read_text() == text for p, text in before.items())  # not recomputed
    assert not list((tmp_path / "r" / "cells").glob("*/s*/.*.tmp"))


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
    assert set(out["variants"]) == {
        "rankmixer",
        "+permutation_split",
        "+multi_embedding+global",
        "+crossed_token",
        "+task_tokens",
        "+preln_swiglu",
        "rankup",
    }
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
        "adapters: [linear]\ncross_adapters: []\nmodule_k: []\nmodel_level: false\nworkers: 1\n" + extra
    )
    return conf


def test_experiments_use_the_given_split_not_downstream_day_counts(tmp_path, capsys):
    """`lfm4ads experiment` passes the run config's resolved split; the default 1/1 day
    counts of DownstreamConfig would test on the last day only (the bug of issue 6)."""
    log, spec = make_run(tmp_path, rows_per_day=300)
    conf = _small_transfer_conf(tmp_path)
    split = {"train": DAYS[:1], "valid": DAYS[1:2], "test": DAYS[2:]}
    out = run_study(Study.transfer, tmp_path, config=conf, seeds=1, split=split)
    assert out["days"] == split
    test_rows = read_log(log, DAYS[2:])
    small = out["small_scenario"]
    n_small = sum(1 for s in test_rows["scenario"].to_pylist() if s == small)
    assert out["table"][str(small)]["rows"]["test"] == n_small
    # the same split from date edges on the command line
    flags = main(
        [
            "transfer",
            "--root",
            str(tmp_path),
            "--config",
            str(conf),
            "--seeds",
            "1",
            "--valid-start",
            DAYS[1],
            "--test-start",
            DAYS[2],
        ]
    )
    assert flags["days"] == split
    ru = tmp_path / "ru.yaml"
    ru.write_text(
        "downstream: {epochs: 1, batch_size: 256, representations: []}\n"
        "model: {d_model: 16, num_tokens: 8, emb_dim: 4, crossed_token: false}\nerank_rows: 16\n"
    )
    r = run_study(Study.rankup, tmp_path, config=ru, seeds=1, split=split)
    assert r["rows"]["test"] == test_rows.num_rows
    with pytest.raises(ValueError, match="give both"):
        main(["transfer", "--root", str(tmp_path), "--config", str(conf), "--valid-start", DAYS[1]])
    with pytest.raises(ValueError, match="no days for"):
        main(
            [
                "transfer",
                "--root",
                str(tmp_path),
                "--config",
                str(conf),
                "--valid-start",
                DAYS[1],
                "--test-start",
                "2027-01-01",
            ]
        )


def test_per_layer_rows_and_gate_variants(tmp_path):
    log, spec = make_run(tmp_path, rows_per_day=300)
    other = tmp_path / "layer_b"
    make_run(other, rows_per_day=10)  # publishes its own UR/IR/CR tables under other/tables
    cfg = TransferExperimentConfig(
        downstream=DownstreamConfig(epochs=1, batch_size=256, seeds=[0]),
        adapters=[],
        cross_adapters=[],
        module_k=[],
        model_level=False,
        scenarios=[0],
        workers=1,
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
