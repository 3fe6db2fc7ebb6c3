"""Per-day spill files of an ingest: canonical rows (plus origin columns) appended batch by
batch into one Arrow IPC file per day, so memory holds one batch while reading and one day
while deciding, whatever the source size."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from contracts.dataset import DS


class DaySpill:
    """Per-day Arrow IPC files of canonical rows (plus origin columns)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
        self.schema: pa.Schema | None = None

    def add(self, t: pa.Table) -> set[str]:
        if t.num_rows == 0:
            return set()
        if self.schema is None:
            self.schema = t.schema
        t = t.cast(self.schema)
        days = pc.unique(t[DS]).to_pylist()
        for d in days:
            part = t if len(days) == 1 else t.filter(pc.equal(t[DS], d))
            w = self.writers.get(d)
            if w is None:
                w = self.writers[d] = pa.ipc.new_file(str(self.folder / f"{d}.arrow"), self.schema)
            w.write_table(part)
        return set(days)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def read(self, d: str) -> pa.Table:
        with pa.memory_map(str(self.folder / f"{d}.arrow")) as src:
            return pa.ipc.open_file(src).read_all()

    @property
    def days(self) -> list[str]:
        return sorted(self.writers)
