"""What the steps of one run hand each other: :class:`RunState`, filled step by step and read
by the report (pipelines/report.py) and the ledger (pipelines/step_records.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from contracts import CheckpointManifest
from contracts.dataset import IngestReport


@dataclass
class RunState:
    """What the steps of one run hand each other (and the report reads)."""

    ds: str = ""
    days: list[str] = field(default_factory=list)
    split: dict[str, list[str]] = field(default_factory=dict)
    checkpoint: Path | None = None
    manifest: CheckpointManifest | None = None
    published: dict[str, dict[str, int]] = field(default_factory=dict)  # ds -> table -> version
    rollover: dict = field(default_factory=dict)
    downstream: dict | None = None
    index: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # steps restored from the ledger (timing 0.0)
    # seconds inside the extract step: extract (Ray Data), gate, aggregate+publish (Spark -> Delta)
    substeps: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    ingest: IngestReport | None = None  # what the ingest step committed (None: a fixed source, reused)
