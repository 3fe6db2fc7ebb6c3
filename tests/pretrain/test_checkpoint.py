"""Checkpoint folders: round trip, atomic write, latest, clear errors on corrupt input."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from contracts import CheckpointManifest, DatasetSpec
from contracts.checkpoint import MANIFEST_FILE, VOCAB_FILE, WEIGHTS_FILE
from pretrain import FeatureEncoder, FoundationModel, ModelConfig, latest_checkpoint, load_checkpoint
from pretrain.checkpoint import CheckpointError, save_checkpoint
from tests.pretrain.toy import SPEC, toy_table


def _save(root: Path, version: str, created: datetime | None = None) -> Path:
    t = toy_table(100)
    enc = FeatureEncoder.fit(t, SPEC)
    cfg = ModelConfig()
    model = FoundationModel(cfg, SPEC, enc.vocab_sizes)
    manifest = CheckpointManifest(
        model_version=version,
        created_at=created or datetime.now(timezone.utc),
        dataset=SPEC,
        model_config_data=cfg.model_dump(mode="json"),
        config_hash="x",
        data_version="toy",
        vocab_sizes=enc.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
    )
    return save_checkpoint(root, model, enc, manifest, {"note.txt": b"hi"})


def test_round_trip_and_latest(tmp_path):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    a = _save(tmp_path, "v1", t0)
    b = _save(tmp_path, "v2", t0 + timedelta(hours=1))
    (tmp_path / ".tmp-v3-abcd").mkdir()  # an interrupted write never counts
    (tmp_path / "v4").mkdir()  # no manifest: incomplete
    assert latest_checkpoint(tmp_path) == b
    assert latest_checkpoint(tmp_path / "nothing") is None
    loaded = load_checkpoint(a)
    assert not loaded.model.training
    assert loaded.manifest.model_version == "v1" and (a / "note.txt").read_bytes() == b"hi"
    state = torch.load(a / WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    batch = loaded.encoder.encode(toy_table(10))
    assert loaded.model(batch).shape == (10, 2)


def test_refuses_existing_version(tmp_path):
    _save(tmp_path, "v1")
    with pytest.raises(FileExistsError):
        _save(tmp_path, "v1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("victim", [WEIGHTS_FILE, VOCAB_FILE, MANIFEST_FILE])
def test_corrupt_file_is_named(tmp_path, victim):
    path = _save(tmp_path, "v1")
    (path / victim).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=victim):
        load_checkpoint(path)


@pytest.mark.parametrize("victim", [WEIGHTS_FILE, VOCAB_FILE, MANIFEST_FILE])
def test_missing_file_is_named(tmp_path, victim):
    path = _save(tmp_path, "v1")
    (path / victim).unlink()
    with pytest.raises(CheckpointError, match=f"{victim}: missing"):
        load_checkpoint(path)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_schema_mismatch_is_refused(tmp_path):
    path = _save(tmp_path, "v1")
    other = DatasetSpec.model_validate({**SPEC.model_dump(), "tasks": ["click"]})
    with pytest.raises(CheckpointError, match="tasks"):
        load_checkpoint(path, expect_spec=other)


def test_weights_of_other_shape_are_refused(tmp_path):
    path = _save(tmp_path, "v1")
    m = json.loads((path / MANIFEST_FILE).read_text())
    m["model_config_data"]["ur_dim"] = 8
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="model.pt: weights do not fit"):
        load_checkpoint(path)


def test_train_refuses_existing_version_and_unknown_tasks_before_training(tmp_path):
    from pretrain import PretrainConfig
    from pretrain.train import train_on_tables

    _save(tmp_path, "v1")
    t = toy_table(50)
    with pytest.raises(FileExistsError, match="v1"):
        train_on_tables(PretrainConfig(model_version="v1"), SPEC, t, t, tmp_path, "toy")
    bad = PretrainConfig.model_validate({"train": {"pairwise_alpha": {"purchase": 0.8}}})
    with pytest.raises(ValueError, match=r"train.pairwise_alpha: unknown task\(s\) \['purchase'\]"):
        train_on_tables(bad, SPEC, t, t, tmp_path, "toy")


def test_warm_start_needs_same_architecture(tmp_path):
    from pretrain import PretrainConfig
    from pretrain.train import train_on_tables

    path = _save(tmp_path, "v1")
    t = toy_table(50)
    cfg = PretrainConfig.model_validate({"init_from": str(path), "model": {"ur_dim": 8}})
    with pytest.raises(ValueError, match="warm start needs the same architecture"):
        train_on_tables(cfg, SPEC, t, t, tmp_path, "toy")


def test_write_failing_midway_publishes_nothing(tmp_path):
    """A crash after model.pt and vocab.json were written (here: an extra file that cannot
    be written) leaves neither the version nor its temp folder; latest stays the old one."""
    good = _save(tmp_path, "v1", datetime(2026, 1, 1, tzinfo=timezone.utc))
    t = toy_table(50)
    enc = FeatureEncoder.fit(t, SPEC)
    model = FoundationModel(ModelConfig(), SPEC, enc.vocab_sizes)
    manifest = load_checkpoint(good).manifest.model_copy(update={"model_version": "v2"})
    with pytest.raises(FileNotFoundError):
        save_checkpoint(tmp_path, model, enc, manifest, {"no_such_dir/diag.json": b"{}"})
    assert not (tmp_path / "v2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert latest_checkpoint(tmp_path) == good


def test_warm_start_from_another_schema_is_refused(tmp_path):
    from pretrain import PretrainConfig
    from pretrain.train import train_on_tables

    path = _save(tmp_path, "v1")
    other = DatasetSpec.model_validate({**SPEC.model_dump(), "user_features": ["age"]})
    t = toy_table(50).drop_columns(["city"])
    with pytest.raises(CheckpointError, match="does not match"):
        train_on_tables(PretrainConfig(init_from=str(path)), other, t, t, tmp_path, "toy")
