"""The references the extraction benchmark measures the job against: a hand-written loop
with the job's I/O, the model's forward pass alone, and a naive per-row DataLoader."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

LAYERS_EXTRA = ["user_tower", "item_tower"]
ID_COLUMNS = ["user_id", "item_id", "event_time", "scenario", "sample_type"]


def fixed(x: torch.Tensor) -> pa.Array:
    a = x.float().numpy()
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def plain_loop(ckpt: Path, uris: list[str], out: Path, batch: int, threads: int, max_rows: int = 0) -> int:
    """What a user writes by hand: read, encode, forward, write, one process, all cores.

    Same I/O as the job: the columns the model needs are read, the same output columns
    (ids, ur, ir, cr, layer) written, one Parquet file per input file. ``max_rows`` > 0
    stops after that many rows (the 10M-row run measures the loop on a prefix).
    """
    from pretrain import load_checkpoint

    torch.set_num_threads(threads)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    spec = lm.manifest.dataset
    columns = list(dict.fromkeys([*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = 0
    for k, uri in enumerate(uris):
        writer = None
        for rb in pq.ParquetFile(uri.removeprefix("file://")).iter_batches(batch_size=batch, columns=columns):
            t = pa.Table.from_batches([rb])
            with torch.inference_mode():
                reps = lm.model.representations(lm.encoder.encode(t, require_labels=False), layers)
            o = pa.table(
                {
                    **{c: t[c] for c in ID_COLUMNS},
                    "ur": fixed(reps[layers[0]]),
                    "ir": fixed(reps[layers[1]]),
                    "cr": fixed(reps[layers[2]]),
                    "layer": pa.array([layers[2]] * t.num_rows, pa.string()),
                }
            )
            writer = writer or pq.ParquetWriter(out / f"part-{k}.parquet", o.schema)
            writer.write_table(o)
            rows += o.num_rows
            if max_rows and rows >= max_rows:
                break
        if writer:
            writer.close()
        if max_rows and rows >= max_rows:
            break
    return rows


def head_rows(uris: list[str], n: int) -> pa.Table:
    parts, got = [], 0
    for u in uris:
        for rb in pq.ParquetFile(u.removeprefix("file://")).iter_batches(batch_size=65536):
            parts.append(rb.slice(0, n - got))
            got += parts[-1].num_rows
            if got >= n:
                return pa.Table.from_batches(parts)
    return pa.Table.from_batches(parts)


def forward_only(ckpt: Path, table: pa.Table, batch: int, threads: int) -> float:
    from pretrain import load_checkpoint

    torch.set_num_threads(threads)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    enc = lm.encoder.encode(table, require_labels=False)
    n = table.num_rows
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch):
            lm.model.representations({k: v[s : s + batch] for k, v in enc.items()}, layers)
    return n / (time.perf_counter() - t0)


def naive(ckpt: Path, table: pa.Table, batch: int, threads: int) -> float:
    """DataLoader over a pandas frame, one ``df.iloc[i]`` per sample, default collate."""
    from torch.utils.data import DataLoader, Dataset

    from pretrain import load_checkpoint

    torch.set_num_threads(threads)
    lm = load_checkpoint(ckpt)
    layers = [*LAYERS_EXTRA, lm.manifest.default_cr_layer]
    enc = lm.encoder.encode(table, require_labels=False)
    frame = {k: (list(v.numpy()) if v.ndim > 1 else v.numpy()) for k, v in enc.items()}
    import pandas as pd

    df = pd.DataFrame(frame)

    class Rows(Dataset):
        def __len__(self):
            return len(df)

        def __getitem__(self, i):
            r = df.iloc[i]
            return {k: torch.as_tensor(np.asarray(r[k])) for k in df.columns}

    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in DataLoader(Rows(), batch_size=batch, shuffle=False):
            lm.model.representations(b, layers)
    return len(df) / (time.perf_counter() - t0)
