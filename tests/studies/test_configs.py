"""Every frozen study config validates against its model and names the command that reproduces it."""

from pathlib import Path

import pytest

from contracts import load_config
from studies import AblationConfig, RankUpExperimentConfig, TransferExperimentConfig

ROOT = Path(__file__).resolve().parents[2]
FROZEN = sorted((ROOT / "configs" / "studies").glob("*.yaml"))
MODELS = {"transfer": TransferExperimentConfig, "rankup": RankUpExperimentConfig, "pretrain_ablation": AblationConfig}


def _model(path: Path):
    (model,) = [m for prefix, m in MODELS.items() if path.stem == prefix or path.stem.startswith(prefix + "_")]
    return model


def test_there_is_a_frozen_config_per_study():
    assert {p.stem for p in FROZEN} >= {"transfer", "rankup", "pretrain_ablation_generated"}


@pytest.mark.parametrize("path", FROZEN, ids=lambda p: p.name)
def test_frozen_config_validates_and_names_its_command(path):
    load_config(path, _model(path))
    text = path.read_text()
    assert f"configs/studies/{path.name}" in text  # the reproduce command in its header
    assert f"configs/studies/{path.name}" in (ROOT / "docs" / "studies.md").read_text()


def test_official_configs_are_the_models_defaults():
    """`lfm4ads experiment transfer|rankup` without --experiment-config = the frozen files."""
    for name, model in (("transfer", TransferExperimentConfig), ("rankup", RankUpExperimentConfig)):
        assert load_config(ROOT / "configs" / "studies" / f"{name}.yaml", model) == model()
