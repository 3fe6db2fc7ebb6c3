"""configs/pretrain.yaml is the documented defaults; misspelled keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import ConfigError, load_config
from pretrain import ModelConfig, PretrainConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_yaml_equals_defaults():
    assert load_config(ROOT / "configs" / "pretrain.yaml", PretrainConfig) == PretrainConfig()


def test_misspelled_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  user_layer: 3\n")
    with pytest.raises(ConfigError, match=r"model\.user_layer: unknown key"):
        load_config(p, PretrainConfig)


def test_invalid_values():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="pairwise_alpha"):
        TrainConfig(pairwise_alpha={"click": 1.5})


@pytest.mark.parametrize("name", ["demo.yaml", "movielens.yaml"])
def test_shipped_run_configs_train_the_full_model(name):
    """The demo (and MovieLens) chain trains the full model: sequence encoder on, BFTS
    (full attention below, sliding above), NLIR, two branches with cross layers."""
    import yaml

    section = (yaml.safe_load((ROOT / "configs" / name).read_text()) or {}).get("pretrain") or {}
    cfg = PretrainConfig.model_validate(section)
    m = cfg.model
    assert m == ModelConfig(), "the shipped run config should not ablate the model"
    assert m.use_sequence and m.nlir != "off" and 0 < m.bfts_full_layers < m.user_layers and m.cross_layers > 0
