"""Where every artefact of one run root lives (one place, so stages agree)."""

from __future__ import annotations

from pathlib import Path


class RunLayout:
    """Paths under a run root::

    root/log/                      canonical interaction log (Delta, by ds)
    root/checkpoints/<version>/    model.pt, vocab.json, manifest.json
    root/samples/ds=<d>/           sample-level extraction output (Parquet shards)
    root/tables/<name>/            representation tables (Delta, by ds)
    root/indexes/<version>/        FAISS builds; root/indexes/CURRENT names the live one
    root/reports/<ds>/             report.md and its plots
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, version: str) -> Path:
        return self.checkpoints / version

    def samples(self, ds: str) -> Path:
        return self.root / "samples" / f"ds={ds}"

    def table(self, name: str) -> Path:
        return self.root / "tables" / name

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    def report(self, ds: str) -> Path:
        return self.root / "reports" / ds
