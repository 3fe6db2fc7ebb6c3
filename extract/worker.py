"""The Ray Data actor: loads the checkpoint once, turns work units into Parquet shards.

A work unit is rows [start, stop) of consecutive row groups of one input Parquet file; a
Ray row is a *packet* of units (JSON), possibly of several days. The actor streams each
*run* of a packet (consecutive units reading one row-group range, each starting where the
previous stopped, e.g. the slices of one big row group) in ONE pass: ``batch_size`` slices
are read, encoded, run through the frozen model and cut into the units' shards, so a
row group of R rows is decoded once, not once per slice (that was quadratic in R).

Three stages overlap (bounded queues of two batches, so memory does not grow with rows):
a reader thread (Parquet decode + encode), the model on the actor's thread, a writer
thread (Arrow conversion, health sums, Parquet encode + write). pyarrow and torch release
the GIL, so with one torch thread the I/O runs on the second core.

A shard is written as ``.<name>.<random>.tmp`` and renamed when complete, after its
health sums went to ``_stats/<name>.json``: a shard either exists complete or not at all,
so a killed job resumes without duplicates (the random part keeps a straggling actor of a
killed job from writing into the temporary file of its successor).
"""

from __future__ import annotations

import json
import os
import queue
import resource
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extract.health import VectorAccumulator, write_shard_stats
from extract.samples import layer_column
from extract.vectors import from_torch, to_arrow

ID_COLUMNS = ["user_id", "item_id", "event_time", "scenario", "sample_type"]
UR, IR = "user_tower", "item_tower"
QUEUE_DEPTH = 2


def open_parquet(uri: str) -> pq.ParquetFile:
    if "://" in uri and not uri.startswith("file://"):
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        return pq.ParquetFile(filesystem.open_input_file(path))
    return pq.ParquetFile(uri.removeprefix("file://"))


def runs_of(units: list[dict]) -> list[list[dict]]:
    """Split a packet into runs: consecutive units of one file, the same row groups and
    output folder, each starting where the previous one stopped (one decode pass each)."""
    runs: list[list[dict]] = []
    for u in units:
        p = runs[-1][-1] if runs else None
        if p and (p["uri"], p["row_groups"], p["out"], p["stop"]) == (u["uri"], u["row_groups"], u["out"], u["start"]):
            runs[-1].append(u)
        else:
            runs.append([u])
    return runs


class _Prefetch:
    """Runs ``produce()`` (a generator) on a thread, at most ``depth`` items ahead."""

    def __init__(self, produce, depth: int = QUEUE_DEPTH):
        self._q: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._fill, args=(produce,), daemon=True)
        self._t.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _fill(self, produce) -> None:
        try:
            for x in produce():
                if not self._put(("item", x)):
                    return
            self._put(("end", None))
        except BaseException as e:  # re-raised on the consumer's thread
            self._put(("error", e))

    def __iter__(self):
        while True:
            kind, x = self._q.get()
            if kind == "end":
                return
            if kind == "error":
                raise x
            yield x

    def close(self) -> None:
        self._stop.set()
        self._t.join()


class _ShardWriter:
    """The writer side of a run (every method runs on the one writer thread, in order)."""

    def __init__(self, layers: list[str]):
        self.layers = layers
        self.unit: dict | None = None
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.rows = 0
        self.accs: dict[str, VectorAccumulator] = {}

    def write(self, unit: dict, ids: pa.Table, reps: dict[str, np.ndarray]) -> None:
        if self.unit is not unit:
            self.finish()
            self.unit, self.rows = unit, 0
            self.tmp = Path(unit["out"]) / f".{unit['shard']}.{uuid.uuid4().hex[:8]}.tmp"
        cols = {c: ids[c] for c in ID_COLUMNS}
        vectors = {"ur": reps[UR], "ir": reps[IR]}
        vectors.update({layer_column(n, i == 0): reps[n] for i, n in enumerate(self.layers)})
        for c, x in vectors.items():
            self.accs.setdefault(c, VectorAccumulator()).update(x)
            cols[c] = to_arrow(x)
        cols["layer"] = pa.array([self.layers[0]] * ids.num_rows, pa.string())
        table = pa.table(cols)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def finish(self) -> int | None:
        """Close the open shard: check its row count, leave its stats, rename into place."""
        u = self.unit
        if u is None:
            return None
        self.writer.close()
        self.writer = None
        self.unit = None
        if self.rows != u["stop"] - u["start"]:
            self.tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"{u['uri']}: row groups {u['row_groups']} rows [{u['start']}, {u['stop']}): wrote {self.rows} rows"
            )
        write_shard_stats(Path(u["out"]), u["shard"], self.accs)
        self.accs = {}
        os.replace(self.tmp, Path(u["out"]) / u["shard"])
        return self.rows

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
        self.writer = self.unit = None


class ExtractWorker:
    """Callable class for ``Dataset.map_batches`` (one model copy per actor)."""

    def __init__(
        self, checkpoint_dir: str, layers: list[str], batch_size: int, torch_threads: int, use_gpu: bool = False
    ):
        self.t_init = time.time()  # wall clock: the driver compares it with the job's start
        import torch

        from pretrain import load_checkpoint

        torch.set_num_threads(max(1, torch_threads))
        self.torch = torch
        self.loaded = load_checkpoint(checkpoint_dir)
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError(
                "ExtractWorker: num_gpus > 0 but this actor sees no CUDA device "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
            )
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.model = self.loaded.model.to(self.device).eval()
        self.layers = list(layers)
        self.batch_size = batch_size
        spec = self.loaded.manifest.dataset
        needed = [*spec.categorical_columns, "scenario", "sample_type", "hist_seq", *ID_COLUMNS]
        self.columns = list(dict.fromkeys(needed))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.t_ready = time.time()

    def forward(self, batch: dict) -> dict[str, np.ndarray]:
        """Encoded batch [B] -> {layer: float32 [B, d]} for UR, IR and the requested layers."""
        torch = self.torch
        if self.device.type != "cpu":
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode():
            reps = self.model.representations(batch, [UR, IR, *self.layers])
        return {k: from_torch(v) for k, v in reps.items()}

    def _pieces(self, run: list[dict]):
        """(unit, rows of the unit as a Table, encoded batch) for the units of ``run`` whose
        shard is not there yet, in order; one decode pass over the run's row groups."""
        first, last = run[0], run[-1]
        todo = [u for u in run if not (Path(u["out"]) / u["shard"]).exists()]
        if not todo:
            return
        stop_at = todo[-1]["stop"]
        k, offset = 0, 0
        pf = open_parquet(first["uri"])
        for rb in pf.iter_batches(batch_size=self.batch_size, row_groups=first["row_groups"], columns=self.columns):
            lo_b, hi_b = offset, offset + rb.num_rows
            offset = hi_b
            while k < len(todo) and todo[k]["start"] < hi_b:
                u = todo[k]
                lo, hi = max(u["start"], lo_b), min(u["stop"], hi_b)
                if hi > lo:
                    table = pa.Table.from_batches([rb.slice(lo - lo_b, hi - lo)])
                    yield u, table, self.loaded.encoder.encode(table, require_labels=False)
                if u["stop"] <= hi_b:
                    k += 1
                else:
                    break
            if offset >= stop_at or offset >= last["stop"]:
                return

    def run_units(self, run: list[dict]) -> list[int]:
        """Process one run; returns each unit's row count (in ``run`` order)."""
        sink = _ShardWriter(self.layers)
        pending: deque[Future] = deque()
        reader = _Prefetch(lambda: self._pieces(run))
        try:
            for unit, table, batch in reader:
                reps = self.forward(batch)
                pending.append(self._pool.submit(sink.write, unit, table.select(ID_COLUMNS), reps))
                while len(pending) > QUEUE_DEPTH:
                    pending.popleft().result()
            pending.append(self._pool.submit(sink.finish))
            while pending:
                pending.popleft().result()
        except BaseException:
            for f in pending:
                f.cancel()
            self._pool.submit(sink.abort).result()
            raise
        finally:
            reader.close()
        counts = []
        for u in run:
            final = Path(u["out"]) / u["shard"]
            if not final.exists():
                raise RuntimeError(
                    f"{u['uri']}: row groups {u['row_groups']} rows [{u['start']}, {u['stop']}): no shard written"
                )
            counts.append(pq.read_metadata(final).num_rows)
        return counts

    def run_unit(self, uri: str, row_groups: list[int], start: int, stop: int, shard: str, out: str) -> int:
        """One unit alone (its own decode pass)."""
        return self.run_units(
            [{"uri": uri, "row_groups": row_groups, "start": start, "stop": stop, "shard": shard, "out": out}]
        )[0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t_call = time.time()
        shards, rows = [], []
        for packet in batch["packet"]:
            for run in runs_of(json.loads(str(packet))):
                rows += self.run_units(run)
                shards += [u["shard"] for u in run]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        n = len(shards)
        # per-packet timestamps (time.time(), seconds) for the job's phase profile
        times = {"t_init": self.t_init, "t_ready": self.t_ready, "t_call": t_call, "t_done": time.time()}
        return {
            "shard": np.asarray(shards),
            "rows": np.asarray(rows, dtype=np.int64),
            "peak_rss_mb": np.full(n, rss),
            "pid": np.full(n, os.getpid()),
            "nice": np.full(n, os.nice(0)),
            **{k: np.full(n, v) for k, v in times.items()},
        }
