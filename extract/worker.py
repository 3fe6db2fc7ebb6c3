"""The Ray Data actor: loads the checkpoint once, turns work units into Parquet shards.

A work unit is rows [start, stop) of one row group of one input Parquet file. The actor reads it in
``batch_size`` slices, runs the frozen model and streams the outputs into ONE shard whose
name is derived from the unit alone, written as ``<name>.tmp`` then renamed: a shard
either exists complete or not at all, so a killed job resumes without duplicates.
"""

from __future__ import annotations

import os
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
                 out_dir: str, use_gpu: bool = False):
        import torch

        from pretrain import load_checkpoint

        torch.set_num_threads(max(1, torch_threads))
        self.torch = torch
        self.loaded = load_checkpoint(checkpoint_dir)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = self.loaded.model.to(self.device).eval()
        self.layers = list(layers)
        self.batch_size = batch_size
        self.out_dir = Path(out_dir)
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

    def run_unit(self, uri: str, row_group: int, start: int, stop: int, shard: str) -> int:
        final = self.out_dir / shard
        if final.exists():  # done by an earlier, interrupted run
            return pq.read_metadata(final).num_rows
        tmp = self.out_dir / (shard + ".tmp")
        pf = open_parquet(uri)
        rows, offset, writer = 0, 0, None
        try:
            # rows before `start` are decoded and dropped: a unit never holds more than its slice
            for rb in pf.iter_batches(batch_size=self.batch_size, row_groups=[row_group], columns=self.columns):
                lo, hi = max(start - offset, 0), min(stop - offset, rb.num_rows)
                offset += rb.num_rows
                if hi <= lo:
                    if offset >= stop:
                        break
                    continue
                out = self.run_batch(pa.Table.from_batches([rb.slice(lo, hi - lo)]))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out.schema)
                writer.write_table(out)
                rows += out.num_rows
                if offset >= stop:
                    break
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise RuntimeError(f"{uri}: row group {row_group} rows [{start}, {stop}) not found")
        os.replace(tmp, final)
        return rows

    def __call__(self, units: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            self.run_unit(str(u), int(g), int(a), int(b), str(s))
            for u, g, a, b, s in zip(units["uri"], units["row_group"], units["start"], units["stop"], units["shard"])
        ]
        return {"shard": np.asarray(units["shard"]), "rows": np.asarray(rows, dtype=np.int64)}
