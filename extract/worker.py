"""The Ray Data actor: loads the checkpoint once, turns work units into Parquet shards.

A work unit is rows [start, stop) of consecutive row groups of one input Parquet file; a
Ray row is a *packet* of units (JSON), possibly of several days. The actor reads each unit
in ``batch_size`` slices, runs the frozen model and streams the outputs into ONE shard
(in the unit's ``out`` folder) whose name is derived from the unit alone, written as
``.<name>.<random>.tmp`` then renamed: a shard either exists complete or not at all, so a
killed job resumes without duplicates (the random part keeps a straggling actor of a
killed job from writing into the temporary file of its successor).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extract.samples import layer_column

ID_COLUMNS = ["user_id", "item_id", "event_time", "scenario", "sample_type"]
UR, IR = "user_tower", "item_tower"


def open_parquet(uri: str) -> pq.ParquetFile:
    if "://" in uri and not uri.startswith("file://"):
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        return pq.ParquetFile(filesystem.open_input_file(path))
    return pq.ParquetFile(uri.removeprefix("file://"))


def fixed_size(x: np.ndarray) -> pa.FixedSizeListArray:
    """[B, d] float -> fixed_size_list<float32, d> (zero-copy from a contiguous float32 array)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


class ExtractWorker:
    """Callable class for ``Dataset.map_batches`` (one model copy per actor)."""

    def __init__(self, checkpoint_dir: str, layers: list[str], batch_size: int, torch_threads: int,
                 use_gpu: bool = False):
        import torch

        from pretrain import load_checkpoint

        torch.set_num_threads(max(1, torch_threads))
        self.torch = torch
        self.loaded = load_checkpoint(checkpoint_dir)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = self.loaded.model.to(self.device).eval()
        self.layers = list(layers)
        self.batch_size = batch_size
        spec = self.loaded.manifest.dataset
        needed = [*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]
        self.columns = list(dict.fromkeys(needed))

    def run_batch(self, table: pa.Table) -> pa.Table:
        """Canonical log rows [B] -> output rows [B] (ids, ur, ir, cr[, cr__*], layer)."""
        torch = self.torch
        batch = self.loaded.encoder.encode(table, require_labels=False)
        if self.device.type != "cpu":
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode():
            reps = self.model.representations(batch, [UR, IR, *self.layers])
        cols = {c: table[c] for c in ID_COLUMNS}
        cols["ur"] = fixed_size(reps[UR].float().cpu().numpy())
        cols["ir"] = fixed_size(reps[IR].float().cpu().numpy())
        for i, name in enumerate(self.layers):
            cols[layer_column(name, i == 0)] = fixed_size(reps[name].float().cpu().numpy())
        cols["layer"] = pa.array([self.layers[0]] * table.num_rows, pa.string())
        return pa.table(cols)

    def run_unit(self, uri: str, row_groups: list[int], start: int, stop: int, shard: str, out: str) -> int:
        final = Path(out) / shard
        if final.exists():  # done by an earlier, interrupted run
            return pq.read_metadata(final).num_rows
        tmp = Path(out) / f".{shard}.{uuid.uuid4().hex[:8]}.tmp"
        pf = open_parquet(uri)
        rows, offset, writer = 0, 0, None
        try:
            # rows before `start` are decoded and dropped: a unit never holds more than its slice
            for rb in pf.iter_batches(batch_size=self.batch_size, row_groups=row_groups, columns=self.columns):
                lo, hi = max(start - offset, 0), min(stop - offset, rb.num_rows)
                offset += rb.num_rows
                if hi <= lo:
                    if offset >= stop:
                        break
                    continue
                table = self.run_batch(pa.Table.from_batches([rb.slice(lo, hi - lo)]))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                rows += table.num_rows
                if offset >= stop:
                    break
        finally:
            if writer is not None:
                writer.close()
        if writer is None or rows != stop - start:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{uri}: row groups {row_groups} rows [{start}, {stop}): read {rows} rows")
        os.replace(tmp, final)
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, rows = [], []
        for packet in batch["packet"]:
            for u in json.loads(str(packet)):
                rows.append(self.run_unit(u["uri"], u["row_groups"], u["start"], u["stop"], u["shard"], u["out"]))
                shards.append(u["shard"])
        return {"shard": np.asarray(shards), "rows": np.asarray(rows, dtype=np.int64)}
