"""Layer probe: point-in-time aggregation vs a brute-force loop, the logistic probe vs
scikit-learn, and one end-to-end probe on the tiny checkpoint (table, plot, manifest)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from extract import ExtractConfig, ProbeConfig, extract_day, probe_layers
from extract.probe import fit_logistic, record_default_layer
from extract.samples import read_marker
from extract.vectors import point_in_time_states


def test_point_in_time_states_equal_a_brute_force_loop():
    rng = np.random.default_rng(0)
    n, tau = 60, 500.0
    ent = rng.integers(0, 5, n).astype(str).astype(object)
    t = rng.integers(0, 3000, n).astype(float)
    t[5] = t[6]
    ent[6] = ent[5]  # a tie: neither sees the other
    x = rng.normal(size=(n, 3))
    got = point_in_time_states(ent, t, x, tau)
    for k in range(n):
        ref = sum(
            (np.exp(-(t[k] - t[j]) / tau) * x[j] for j in range(n) if ent[j] == ent[k] and t[j] < t[k]), np.zeros(3)
        )
        np.testing.assert_allclose(got[k], ref, rtol=1e-10, atol=1e-12)


def test_logistic_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.normal(size=400) > 0).astype(float)
    score = fit_logistic(x, y, l2=0.0, max_iter=500)
    mean, std = x.mean(0), x.std(0) + 1e-8
    ref = LogisticRegression(C=1e6, max_iter=2000).fit((x - mean) / std, y)
    np.testing.assert_allclose(score(x), ref.decision_function((x - mean) / std), rtol=1e-3, atol=1e-3)


def test_probe_scores_every_layer_and_records_the_best(tiny_run, ray_cluster, tmp_path, capsys):
    from extract.job import resolve_layers
    from pretrain import load_checkpoint

    layout, ckpt, days = tiny_run
    ckpt_copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, ckpt_copy)  # the probe rewrites the manifest: not the shared checkpoint
    with pytest.raises(ValueError, match=r"scenario 9 unknown.*valid: \[0, 1, 2, 3\]"):
        probe_layers(ckpt_copy, layout.log, days[:1], days[1:], 9, tmp_path / "p")
    with pytest.raises(ValueError, match="both train and validation"):
        probe_layers(ckpt_copy, layout.log, days, days[1:], 0, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    before = load_checkpoint(ckpt_copy).manifest
    res = probe_layers(
        ckpt_copy,
        layout.log,
        days[:1],
        days[1:],
        0,
        tmp_path / "p",
        ProbeConfig(extract={"rows_per_unit": 1000, "batch_size": 300}, tau_seconds=86400.0),
    )
    names = [r["layer"] for r in res["layers"]]
    cr = [l.name for l in before.layers if l.kind == "CR"]
    assert names == [*cr, "user_tower", "item_tower"]
    assert all(0.0 <= r["auc"] <= 1.0 for r in res["layers"])
    # only ad-branch layers compete (content layers and towers are scored for the plot)
    ad = [r for r in res["layers"] if r["layer"].startswith("ad.")]
    best = max(ad, key=lambda r: r["auc"])
    assert res["chosen"] == best["layer"] and res["previous_default"] == before.default_cr_layer
    assert res["ranking"] == [r["layer"] for r in sorted(ad, key=lambda r: -r["auc"])]
    assert res["train_rows"] > 0 and res["valid_rows"] > 0 and res["valid_days"] == days[1:]
    table = (tmp_path / "p" / "probe.md").read_text()
    assert all(f"| {n} |" in table for n in names) and "chosen" in table
    assert (tmp_path / "p" / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "p" / "probe.json").read_text())["chosen"] == res["chosen"]
    after = load_checkpoint(ckpt_copy).manifest  # still a loadable checkpoint
    assert after.default_cr_layer == res["chosen"] and resolve_layers(after, None) == [res["chosen"]]
    assert after.metrics[f"probe_auc:{res['chosen']}"] == pytest.approx(best["auc"])
    probe = after.layer_probe  # the chosen layer, the ranking and the plot travel with the checkpoint
    assert probe.chosen == res["chosen"] and [p.layer for p in probe.ranking] == res["ranking"]
    assert probe.valid_days == days[1:] and probe.ranking[0].valid_auc == pytest.approx(best["auc"])
    assert (ckpt_copy / probe.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(ckpt_copy.glob(".*.tmp"))
    from extract.aggregate import daily_layer

    assert daily_layer(after, None) == res["chosen"]  # what the daily run publishes...
    assert daily_layer(after, None, pinned="ad.cross_1") == "ad.cross_1"  # ...unless the config pins one
    assert daily_layer(after, ["ad.mlp_2"]) == "ad.mlp_2"
    # the command line with a config file: extraction is recognised as done, same scores
    from extract.probe_cli import main

    cfg = tmp_path / "extract.yaml"
    cfg.write_text("probe:\n  tau_seconds: 86400.0\n  extract:\n    rows_per_unit: 1000\n    batch_size: 300\n")
    capsys.readouterr()
    main(
        [
            "--checkpoint",
            str(ckpt_copy),
            "--log",
            str(layout.log),
            "--train-days",
            days[0],
            "--test-days",
            days[1],
            "--scenario",
            "0",
            "--out",
            str(tmp_path / "p"),
            "--config",
            str(cfg),
            "--no-record",
        ]
    )
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["chosen"] == res["chosen"] and not again["recorded"]
    assert [r["auc"] for r in again["layers"]] == pytest.approx([r["auc"] for r in res["layers"]])
    # the daily job (layers: null) extracts the recorded layer; without a probe it extracted
    # the LFM4Ads default, the penultimate MLP layer of the ad branch (tiny model: mlp_dims [16, 8])
    import pyarrow.parquet as pq

    assert before.default_cr_layer == "ad.mlp_1"
    daily_cfg = ExtractConfig(rows_per_unit=1000, batch_size=300)
    daily = extract_day(ckpt_copy, layout.log, days[1], tmp_path / "daily", daily_cfg)
    assert daily.layers == [res["chosen"]] and read_marker(daily.out_dir).layers == {res["chosen"]: "cr"}
    assert set(pq.read_table(daily.out_dir / daily.shards[0])["layer"].to_pylist()) == {res["chosen"]}
    # a later choice changes the day's fingerprint: the finished day is recomputed with it
    other = next(name for name in cr if name != res["chosen"] and name.startswith("ad."))
    record_default_layer(ckpt_copy, other)
    redone = extract_day(ckpt_copy, layout.log, days[1], tmp_path / "daily", daily_cfg)
    assert not redone.skipped and read_marker(redone.out_dir).layers == {other: "cr"}
    with pytest.raises(KeyError, match="valid"):
        record_default_layer(ckpt_copy, "ad.mlp_9")
    # a content layer can never become the ads default, by the probe, by hand or in a manifest
    with pytest.raises(ValueError, match="ad-branch"):
        record_default_layer(ckpt_copy, "content.mlp_1")
    from contracts.checkpoint import CheckpointManifest

    with pytest.raises(ValueError, match="must be an ad-branch layer"):
        CheckpointManifest.model_validate(
            {**after.model_dump(), "layer_probe": None, "default_cr_layer": "content.mlp_1"}
        )


def test_auc_standard_error_matches_a_bootstrap():
    from extract.probe import auc_standard_error
    from pretrain.metrics import auc

    rng = np.random.default_rng(2)
    y = (rng.random(600) < 0.3).astype(float)
    s = y * 0.8 + rng.normal(size=600)
    a = auc(y, s)
    boot = []
    for _ in range(400):
        i = rng.integers(0, 600, 600)
        boot.append(auc(y[i], s[i]))
    se = auc_standard_error(a, int(y.sum()), int(600 - y.sum()))
    assert se == pytest.approx(np.std(boot), rel=0.2)
