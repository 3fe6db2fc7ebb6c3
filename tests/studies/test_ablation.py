"""The pretraining ablation through its command: a tiny generated log, two variants, one seed."""

import json

from studies.cli import main
from studies.pretrain_ablation import VARIANTS, AblationConfig


def test_ablation_command_writes_every_run_and_the_summary(tmp_path, capsys):
    out = tmp_path / "abl.json"
    argv = ["ablation", "--days", "3", "--rows-per-day", "300", "--epochs", "1", "--seeds", "1"]
    summary = main([*argv, "--variant", "full", "--variant", "no_nlir", "--out", str(out)])
    assert set(summary) == {"full", "no_nlir"}
    assert set(summary["full"]) == {"click", "conversion"} and summary["full"]["click"]["runs"] == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    written = json.loads(out.read_text())
    assert written["summary"] == summary and written["args"]["seeds"] == [0] and written["args"]["days"] == 3
    assert written["args"]["variants"] == ["full", "no_nlir"] and written["args"]["out"] == str(out)


def test_ablation_defaults_run_every_variant():
    assert AblationConfig().variants == list(VARIANTS) and AblationConfig().seeds == [0, 1, 2]
