"""Ray Train on a small generated log, the training rows streamed through Ray Data: a failed
run publishes nothing, the rerun resumes from the last epoch checkpoint, ends bit-identical
to an uninterrupted (plain-loop) run of the same code over the same rows in stream order,
writes a loadable checkpoint whose manifest validates, and learns the planted signal; a
warm start on the next day starts from those weights and records the lineage. Three
TorchTrainer runs in all (each pays ~15-25 s of Ray Train start-up)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from contracts import CheckpointManifest
from contracts.checkpoint import MANIFEST_FILE, WEIGHTS_FILE
from datasources import GeneratorConfig, generate_log, log_days, read_log, read_log_spec
from pretrain import FeatureEncoder, PretrainConfig, latest_checkpoint, load_checkpoint, train_foundation_model
from pretrain.data import to_arrays
from pretrain.replica import fit_plain
from pretrain.stream import log_files_for_days, read_in_stream_order
from pretrain.train import RUNS_DIR

pytestmark = pytest.mark.slow

CFG = PretrainConfig.model_validate(
    {
        "train": {"epochs": 2, "batch_size": 256, "lr": 3e-3, "patience": 5, "diagnostics_rows": 300},
        "model_version": "v-test",
    }
)


LOG_GEN = GeneratorConfig(
    num_users=300, num_items=150, days=4, rows_per_day=5000, seq_len=10, num_cities=20, num_advertisers=30, seed=3
)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """Days 1-2 train, day 3 validates; day 4 is the warm start's validation day."""
    path = tmp_path_factory.mktemp("pretrain") / "log"
    generate_log(LOG_GEN, path)
    days = log_days(path)
    return path, days[:2], days[2:3]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def progress() -> list[logging.LogRecord]:
    """The progress records of the resumed run (filled by :func:`resumed`)."""
    return []


@pytest.fixture(scope="module")
def resumed(log, ray_cluster, tmp_path_factory, progress):
    from engines.progress import PROGRESS_LOGGER

    root = tmp_path_factory.mktemp("ckpt")
    path_, train, valid = log
    with pytest.raises(RuntimeError, match="rerun the same command to resume"):
        train_foundation_model(CFG, path_, root, train, valid, _fail_after_epoch=1)
    failed_state = latest_checkpoint(root), sorted((root / RUNS_DIR).glob("*/checkpoint_*"))
    logger, handler = logging.getLogger(PROGRESS_LOGGER), _Records()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        manifest, path = train_foundation_model(CFG, path_, root, train, valid)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    progress.extend(handler.records)
    return root, manifest, path, failed_state


def test_failed_run_publishes_nothing(resumed):
    _, _, _, (latest, epoch_ckpts) = resumed
    assert latest is None, "a failed run must not publish a version"
    assert epoch_ckpts, "the failed run keeps its epoch checkpoint for resuming"


def test_checkpoint_is_complete_and_learns(resumed):
    root, manifest, path, _ = resumed
    assert path == root / "v-test" and latest_checkpoint(root) == path
    assert CheckpointManifest.model_validate_json((path / MANIFEST_FILE).read_text()) == manifest
    assert manifest.epochs_trained == 2 and manifest.default_cr_layer == "ad.mlp_1"
    assert manifest.metrics["resumed_from_epoch"] == 1.0
    diag = json.loads((path / "diagnostics.json").read_text())
    assert [h["epoch"] for h in diag["history"]] == [1, 2]
    assert (path / "erank.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((root / RUNS_DIR).glob("*")), "a finished run leaves no resume state"
    loaded = load_checkpoint(path)
    assert loaded.manifest.vocab_sizes == loaded.encoder.vocab_sizes
    # the planted signal is learnable: clearly above chance on the held-out day
    assert manifest.metrics["valid.click.auc"] > 0.55, manifest.metrics
    assert "erank.seq.layer_0" in manifest.metrics and "valid.click.gauc" in manifest.metrics


def test_resumed_equals_uninterrupted_plain_run(log, resumed):
    path_, train, valid = log
    spec = read_log_spec(path_)
    tr, va = read_log(path_, train), read_log(path_, valid)
    enc = FeatureEncoder.fit(tr, spec, CFG.train.min_count, CFG.train.max_vocab)
    # the rows in the order the Ray Data stream yields them (files in day, name order)
    streamed = read_in_stream_order(log_files_for_days(path_, train))
    assert streamed.num_rows == tr.num_rows
    ref = fit_plain(
        CFG.model, CFG.train, spec, enc.vocab_sizes, to_arrays(enc.encode(streamed)), to_arrays(enc.encode(va))
    )
    got = torch.load(resumed[2] / WEIGHTS_FILE, weights_only=True)
    assert ref["best_state"].keys() == got.keys()
    for k in got:
        torch.testing.assert_close(got[k], ref["best_state"][k], rtol=0, atol=0, msg=k)


def test_bad_day_split_is_refused(log, tmp_path):
    path_, train, valid = log
    with pytest.raises(ValueError, match="time split"):
        train_foundation_model(CFG, path_, tmp_path, valid, train)


@pytest.fixture(scope="module")
def warm(log, resumed):
    """Warm start on day 3 (validated on day 4) from the checkpoint trained on days 1-2."""
    path_, _, _ = log
    root, base_manifest, base_path, _ = resumed
    days = log_days(path_)
    cfg = CFG.model_copy(
        update={
            "init_from": str(base_path),
            "model_version": "v-warm",
            "train": CFG.train.model_copy(update={"epochs": 1}),
        }
    )
    manifest, path = train_foundation_model(cfg, path_, root, days[2:3], days[3:4])
    return cfg, base_manifest, base_path, manifest, path, days


def test_warm_start_records_lineage_and_keeps_old_vocabulary(warm):
    _, base_manifest, base_path, manifest, path, days = warm
    assert manifest.lineage == [f"v-test {base_manifest.data_version}"]
    assert f"train={days[2]}..{days[2]}" in manifest.data_version
    assert (manifest.train_days, manifest.valid_days) == (days[2:3], days[3:4])
    assert latest_checkpoint(path.parent) == path
    old, new = load_checkpoint(base_path).encoder, load_checkpoint(path).encoder
    for col, values in old.vocabs.items():  # old ids keep their index (aligned with the old rows)
        assert new.vocabs[col][: len(values)] == values, col


def test_warm_start_starts_from_the_old_weights(log, warm):
    """Equal bit for bit to a plain warm-started run from the old weights, and unlike a
    cold start with the same seed: the run began from the checkpoint, not from scratch."""
    path_, _, _ = log
    cfg, _, base_path, _, path, days = warm
    base = load_checkpoint(base_path)
    spec = read_log_spec(path_)
    tr, va = read_log(path_, days[2:3]), read_log(path_, days[3:4])
    enc = base.encoder.extend(tr, cfg.train.min_count, cfg.train.max_vocab)
    tr_arr = to_arrays(enc.encode(read_in_stream_order(log_files_for_days(path_, days[2:3]))))
    va_arr = to_arrays(enc.encode(va))
    ref = fit_plain(cfg.model, cfg.train, spec, enc.vocab_sizes, tr_arr, va_arr, init_state=base.model.state_dict())
    cold = fit_plain(cfg.model, cfg.train, spec, enc.vocab_sizes, tr_arr, va_arr)
    got = torch.load(path / WEIGHTS_FILE, weights_only=True)
    for k in got:
        torch.testing.assert_close(got[k], ref["best_state"][k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(got[k], cold["best_state"][k]) for k in got)


def test_a_fresh_root_trains_on_the_same_rows_and_vocabulary(log, ray_cluster, tmp_path_factory):
    """Reproducible across roots: the same source, its log written afresh in another root,
    gives the driver the same vocabulary (the distributed fit) and the workers the same
    rows in the same stream order. Training is a function of those (the Ray Train run
    equals the plain loop over them, test_resumed_equals_uninterrupted_plain_run; the
    plain loop is bit-reproducible, tests/pretrain/test_loop.py), so a fresh root trains
    the same checkpoint. (A log writer that reordered rows made fresh roots train
    differently: this is the check that catches it, without a fourth Ray Train run.)"""
    from pretrain.train import prepare_training

    path_, train, _ = log
    again = tmp_path_factory.mktemp("again") / "elsewhere" / "log"
    generate_log(LOG_GEN, again)
    enc_a, plan_a, shards_a = prepare_training(path_, train, CFG.train)
    enc_b, plan_b, shards_b = prepare_training(again, train, CFG.train)
    assert enc_a.vocabs == enc_b.vocabs and enc_a.vocab_sizes == enc_b.vocab_sizes
    assert plan_a.total_rows == plan_b.total_rows and shards_a == shards_b
    rows_a = read_in_stream_order(log_files_for_days(path_, train))
    rows_b = read_in_stream_order(log_files_for_days(again, train))
    assert rows_a.equals(rows_b)


def test_the_driver_reports_each_epoch_it_trains(progress):
    """The resumed run (epoch 1 came from the failed run's checkpoint) reports epoch 2 of 2."""
    epochs = [(r.done, r.total) for r in progress if getattr(r, "task", None) == "pretrain.epoch"]
    assert epochs == [(2, 2)]
