"""``python -m extract probe ...``: the layer probe without the pipelines CLI (:mod:`extract.probe_cli`)."""

from contracts.errors import run_entry
from extract.probe_cli import app

if __name__ == "__main__":
    run_entry(app, "python -m extract")
