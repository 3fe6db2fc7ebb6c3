"""``python -m extract probe ...``: the layer probe without the pipelines CLI (:mod:`extract.probe_cli`)."""

from extract.probe_cli import app

if __name__ == "__main__":
    app(prog_name="python -m extract")
