"""``python -m studies transfer|rankup|rankup-defaults|ablation ...`` (see :mod:`studies.cli`)."""

from contracts.errors import run_entry
from studies.cli import app

run_entry(app, "python -m studies")
