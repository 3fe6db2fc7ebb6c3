"""README.md's command blocks run as written.

Every line of every ```bash block is parsed. Lines in :data:`SKIPPED` are not run, each with
its reason; every other line is run through the CLI's entry function (``pipelines.cli.cli``,
in this process, on the session's Spark and Ray) with ``configs/demo.yaml`` replaced by a
small config of the same shape (8 generated days, so ``--ds 2026-01-08`` and the backfill
range exist) and must exit 0. A README line that is neither run nor listed fails the test,
so a new command block cannot go untested.

The small config fixes the split by date (valid 2026-01-06, test from 2026-01-07): every
day from 2026-01-07 on trains on the same days, so one checkpoint (random weights, made
here: training is tested in tests/pretrain and test_run.py) serves all of them, and the
backfill's days 2026-01-02..06, which cannot have a test day, are skipped by name.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

README = Path(__file__).resolve().parents[2] / "README.md"

SKIPPED = {
    "make demo": "the full demo (~100k rows, minutes); the same chain runs below as `lfm4ads run` on a small config",
    "make test": "runs this test suite itself",
    "make lint": "ruff and mypy: .ci/run runs it before this suite",
    "lfm4ads experiment transfer": "trains every adapter variant x 5 seeds (minutes); tests/studies covers it",
    "lfm4ads experiment rankup": "trains RankMixer/RankUp x 5 seeds (minutes); tests/studies covers it",
    "lfm4ads serve retrieval": "a server that runs until stopped; tests/retrieval covers the service",
}

SMALL = {
    "source": {
        "kind": "generated",
        "generator": {"num_users": 150, "num_items": 80, "days": 8, "rows_per_day": 300, "windows_per_day": 2},
    },
    "split": {"valid_start": "2026-01-06", "test_start": "2026-01-07"},
    "pretrain": {
        "model": {"d_model": 16, "user_layers": 2, "ur_dim": 16, "ir_dim": 16, "mlp_dims": [32, 16]},
        "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 100},
    },
    "downstream": {"scenario": 0, "epochs": 1, "representations": ["user_ur", "item_ir", "user_cr", "item_cr"]},
    "retrieval": {"recall_target": 0.5},
}


def readme_commands() -> list[str]:
    """Every command line of README.md's ```bash blocks (comments stripped), in order."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            cmd = line.split("  #")[0].split(" # ")[0].strip()
            if cmd and not cmd.startswith("#"):
                lines.append(cmd)
    return lines


ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _split(cmd: str) -> tuple[dict[str, str], list[str]]:
    """``"A=1 lfm4ads x"`` -> ``({"A": "1"}, ["lfm4ads", "x"])``."""
    words, env = shlex.split(cmd), {}
    while words and ENV.match(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def _skip_reason(cmd: str) -> str | None:
    head = " ".join(_split(cmd)[1][:3])
    return next((why for prefix, why in SKIPPED.items() if head.startswith(prefix)), None)


def test_every_readme_line_is_run_or_skipped_with_a_reason():
    cmds = readme_commands()
    assert any(c.startswith("lfm4ads run") for c in cmds) and any(c.startswith("make demo") for c in cmds)
    for cmd in cmds:
        assert _split(cmd)[1][0] == "lfm4ads" or _skip_reason(cmd), f"README line neither run nor skipped: {cmd}"


def test_readme_commands_run_as_written(tmp_path, monkeypatch, ray_cluster, spark, capsys):
    from pipelines import RunConfig
    from pipelines.cli import cli
    from tests.pipelines.helpers import untrained_checkpoint

    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "root": "root"}))  # relative: resolves next to the file
    cfg = RunConfig.model_validate({**SMALL, "root": str(tmp_path / "root")})
    untrained_checkpoint(cfg, "v-readme")
    ran = []
    for cmd in readme_commands():
        if _skip_reason(cmd):
            continue
        env, words = _split(cmd)
        assert words[0] == "lfm4ads", cmd
        argv = [str(config) if w == "configs/demo.yaml" else w for w in words[1:]]
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            rc = cli(argv)
        captured = capsys.readouterr()
        assert rc == 0, f"{cmd} -> exit {rc}\n{captured.err[-3000:]}"
        ran.append(cmd)
        if cmd.startswith("lfm4ads backfill"):
            assert "skip ds=2026-01-02" in captured.err and "skip ds=2026-01-06" in captured.err
        if cmd.startswith("LFM4ADS_LOG_FORMAT=json"):
            import json

            assert all(json.loads(line) for line in captured.err.splitlines() if line.strip())
    assert len(ran) >= 15
    assert (tmp_path / "root" / "reports" / "2026-01-08" / "report.md").is_file()
