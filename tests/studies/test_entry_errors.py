"""``python -m studies`` and ``python -m extract probe`` end an error with one line naming the
problem and the exit code (contracts.errors.run_entry), never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["studies", "transfer", "--root", "{tmp}/no_root"], "no_root/log: not a Delta table"),
        (
            [
                "extract",
                "probe",
                "--checkpoint",
                "{tmp}/no_ckpt",
                "--log",
                "{tmp}/log",
                "--train-days",
                "2026-01-01",
                "--valid-days",
                "2026-01-02",
                "--out",
                "{tmp}/out",
            ],
            "no_ckpt is not a checkpoint folder",
        ),
    ],
)
def test_a_bad_path_is_one_line_and_exit_1(tmp_path, argv, names):
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert names in proc.stderr and proc.stderr.startswith(f"python -m {argv[0]}: FileNotFoundError: ")
