"""Load test of the retrieval service on loopback, with an index swap in the middle.

    python -m benchmarks.serve                          # 100k items x 64, 20k requests
    python -m benchmarks.serve --items 20000 --requests 5000

Two index versions are built up front under one index root; the service (a separate
process, ``retrieval.service.serve``: FastAPI on uvicorn) starts on the first; when half
the requests are done, ``CURRENT`` is switched to the second (the atomic swap a daily
build performs). ``--concurrency`` client threads send keep-alive requests (half by user
id, half raw vectors, k=``--k``). ``server_cpu_ms_per_request``: the service process's CPU
time over the load phase per request (Linux /proc), less sensitive to other load than rps
and latency. ``--serve-module`` runs another implementation with the same ``serve``
signature on the same data (e.g. an earlier version saved outside the tree, put on
PYTHONPATH). A request fails on any non-200 status or connection error;
``failed_during_swap`` counts failures from the switch until 1 s after the first answer
from the new version. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.retrieval import mixture, write_items
from retrieval import RetrievalConfig, build_index, store


def write_users(path: Path, vectors: np.ndarray) -> None:
    import pyarrow as pa

    from benchmarks.retrieval import DS
    from contracts import REPRESENTATION_TABLES, TableProperties
    from engines import delta_io

    n, dim = vectors.shape
    from datetime import datetime, timezone

    table = pa.table(
        {
            "entity_id": pa.array([f"u{i}" for i in range(n)], pa.string()),
            "ds": pa.array([DS] * n, pa.string()),
            "model_version": pa.array(["bench"] * n, pa.string()),
            "layer": pa.array(["ur"] * n, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
            "updated_at": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
            "sample_count": pa.array(np.ones(n, np.int64)),
        },
        schema=REPRESENTATION_TABLES["user_ur"].arrow_schema(dim),
    )
    props = TableProperties(dim=dim, source_checkpoint="bench", config_hash="bench")
    delta_io.replace_day(path, table, DS, configuration=props.to_delta())


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("service did not become ready")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--serve-module",
        default="retrieval.service",
        help="Module whose serve(index_root, user_table, host, port, poll_s=) runs the service "
        "(to compare another implementation on the same data and load).",
    )
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    proc = None
    try:
        items, model = mixture(args.items, args.dim, 200, rng)
        users, _ = mixture(args.users, args.dim, 200, rng, model)
        write_items(work / "item_ir", items)
        write_users(work / "user_ur", users)
        cfg = RetrievalConfig(k_values=[10, args.k], eval_queries=400, keep_versions=3, seed=args.seed)
        from benchmarks.retrieval import DS

        v1 = build_index(work / "item_ir", DS, work / "idx", cfg, queries=users[:400]).version
        v2 = build_index(work / "item_ir", DS, work / "idx", cfg, queries=users[:400]).version
        store.set_current(work / "idx", v1)
        print(f"built {v1} and {v2}", flush=True)

        port = free_port()
        code = (
            "import logging,sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr);"
            "logging.getLogger('retrieval.access').setLevel(logging.WARNING);"  # no line per request
            f"from {args.serve_module} import serve;"
            f"serve({str(work / 'idx')!r}, {str(work / 'user_ur')!r}, '127.0.0.1', {port}, poll_s=0.2)"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
        wait_ready(port, proc)

        lat = np.zeros(args.requests)
        done_at = np.zeros(args.requests)
        ok = np.zeros(args.requests, bool)
        version_seen = np.empty(args.requests, object)
        counter = iter(range(args.requests))
        lock = threading.Lock()
        half = threading.Event()
        bodies = [
            json.dumps({"user_id": f"u{int(u)}", "k": args.k}).encode()
            if j % 2 == 0
            else json.dumps({"vector": users[int(u)].round(5).tolist(), "k": args.k}).encode()
            for j, u in enumerate(rng.integers(0, args.users, 512))
        ]

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                if i == args.requests // 2:
                    half.set()
                t = time.perf_counter()
                try:
                    conn.request("POST", "/search", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    body = json.loads(r.read())
                    ok[i] = r.status == 200
                    version_seen[i] = body.get("index_version")
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                done_at[i] = time.perf_counter()
                lat[i] = done_at[i] - t
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        half.wait()
        swap_at = time.perf_counter()
        store.set_current(work / "idx", v2)
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu1 = cpu_seconds(proc.pid)

        new = np.flatnonzero(version_seen == v2)
        first_new = done_at[new].min() if new.size else float("inf")
        window = (done_at >= swap_at) & (done_at <= first_new + 1.0)
        result = {
            "requests": args.requests,
            "failed": int((~ok).sum()),
            "failed_during_swap": int((~ok & window).sum()),
            "p50_ms": round(float(np.percentile(lat, 50) * 1e3), 2),
            "p99_ms": round(float(np.percentile(lat, 99) * 1e3), 2),
            "rps": round(args.requests / wall, 1),
            "swap_visible_after_ms": round((first_new - swap_at) * 1e3, 1) if new.size else None,
            "answered_by_new_version": int(new.size),
            "items": args.items,
            "concurrency": args.concurrency,
            "k": args.k,
            "serve_module": args.serve_module,
            # CPU the service process spent per request (all its threads): less sensitive to
            # other load on the machine than rps and latency
            "server_cpu_ms_per_request": round((cpu1 - cpu0) / args.requests * 1e3, 3)
            if cpu0 is not None and cpu1 is not None
            else None,
        }
        print(json.dumps(result))
        return result
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
