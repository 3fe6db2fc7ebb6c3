"""``python -m studies transfer|rankup|ablation ...`` (see :mod:`studies.cli`)."""

from studies.cli import app

app(prog_name="python -m studies")
