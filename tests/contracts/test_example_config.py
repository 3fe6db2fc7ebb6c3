"""configs/{pretrain,extract,downstream,retrieval}.yaml are written from their models."""

from __future__ import annotations

import json

import pytest

from contracts import load_config
from contracts.example_config import CONFIGS, EXAMPLES, main, model_class, render


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_file_is_what_the_generator_writes(name):
    # a changed default or description needs `python -m contracts.example_config`
    assert (CONFIGS / name).read_text() == render(name), f"configs/{name} is stale"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_file_loads_as_the_defaults(name):
    model = model_class(EXAMPLES[name].model)
    assert load_config(CONFIGS / name, model) == model()


def test_check_mode_names_a_stale_file(monkeypatch, tmp_path, capsys):
    import contracts.example_config as ex

    monkeypatch.setattr(ex, "CONFIGS", tmp_path)
    (tmp_path / "downstream.yaml").write_text("epochs: 20\n")
    assert main(["--check"]) == 1
    assert "downstream.yaml" in capsys.readouterr().out
    assert not (tmp_path / "pretrain.yaml").exists()  # --check writes nothing
    assert main([]) == 0 and main(["--check"]) == 0


def test_each_example_is_loaded_by_lfm4ads_validate(tmp_path, capsys):
    from pipelines.cli import cli

    for name in sorted(EXAMPLES):
        kind = name.removesuffix(".yaml")
        assert cli(["validate", "--kind", kind]) == 0, name
        said = capsys.readouterr()
        assert f"{name} is a valid" in said.err and json.loads(said.out.splitlines()[-1])["kind"] == kind
    typo = tmp_path / "d.yaml"
    typo.write_text("epoch: 3\n")
    assert cli(["validate", "--kind", "downstream", "--config", str(typo)]) == 2
    assert "epoch: unknown key" in capsys.readouterr().err
    assert cli(["validate", "--kind", "rollover"]) == 2
    assert "'rollover' is not one of 'run', 'pretrain'" in capsys.readouterr().err
