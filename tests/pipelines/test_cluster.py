"""Beyond one machine, for real: the daily job against a Ray cluster (a head and a worker
node, both ``ray start`` on loopback) and a Spark standalone master plus worker (pyspark's
own ``spark-class``), all started here on free ports and torn down by their pids.

The job runs as ``lfm4ads run`` in a child process: this test process may already hold a
local Ray and a local Spark session (other tests' fixtures), which a run must not reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from contracts import REPRESENTATION_TABLES, RunLayout

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
TINY = {
    "source": {
        "kind": "generated",
        "generator": {"num_users": 200, "num_items": 100, "days": 3, "rows_per_day": 800, "windows_per_day": 2},
    },
    "split": {"valid_days": 1, "test_days": 1},
    "pretrain": {
        "model": {"d_model": 8, "user_layers": 1, "ur_dim": 8, "ir_dim": 8, "mlp_dims": [16, 8]},
        "train": {"epochs": 1, "batch_size": 256, "diagnostics_rows": 100, "num_workers": 1},
    },
    "downstream": {"scenario": 0, "epochs": 1, "representations": ["user_ur", "item_ir"]},
    "retrieval": {"recall_target": 0.5},
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env() -> dict:
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        SPARK_LOCAL_IP="127.0.0.1",
        PYTHONHASHSEED="0",
    )
    env.pop("LFM4ADS_SPARK_MASTER", None)
    return env


class Cluster:
    """Processes this test started, each in its own session, killed with their descendants."""

    def __init__(self, work: Path):
        self.work, self.procs = work, []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        """SIGTERM every process of the sessions we created and their descendants (by
        pid, from /proc), then SIGKILL what is left after 10 s."""
        roots = [p.pid for _, p in self.procs]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _tree(roots):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            end = time.time() + 10
            while sig == signal.SIGTERM and time.time() < end and _tree(roots):
                time.sleep(0.5)
        for _, p in self.procs:
            p.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")


def _tree(roots: list[int]) -> list[int]:
    """Live pids in the sessions of ``roots`` or descending from them (zombies excluded)."""
    parent, session = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        parent[int(d.name)], session[int(d.name)] = int(fields[1]), int(fields[3])
    keep = set(roots) | {pid for pid, sid in session.items() if sid in roots}
    grew = True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in keep} - keep
        keep |= more
        grew = bool(more)
    return sorted(pid for pid in keep if pid in parent)


def _wait_for(what: str, ok, timeout: float, cluster: Cluster, log_name: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if ok():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not come up in {timeout:.0f}s:\n{cluster.log(log_name)[-3000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ray_node_args(ports: list[int], temp: Path | None) -> list[str]:
    nm, om, agent_grpc, agent_http, metrics, runtime_env, wmin = ports
    args = [
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--min-worker-port={wmin}",
        f"--max-worker-port={wmin + 40}",
        "--object-store-memory=300000000",
        "--block",
        "--disable-usage-stats",
    ]
    return args + ([f"--temp-dir={temp}"] if temp else [])


def _ray_nodes(address: str, env: dict) -> list[dict]:
    code = (
        "import json, ray; ray.init(address=%r, log_to_driver=False); "
        "print(json.dumps([{'alive': n['Alive'], 'cpus': n['Resources'].get('CPU', 0)} for n in ray.nodes()]))"
        % address
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must stay short (AF_UNIX limit): a short temp dir of our own
    ray_temp = Path(f"/tmp/lfm4ads-raytest-{os.getpid()}")
    env = _env()
    c = Cluster(work)
    ports = _free_ports(2 + 6 + 6 + 3)
    dashboard = ports[1]  # the head's dashboard process starts even without the UI: keep it off 8265
    gcs = ports[0]
    # worker port ranges: 40 ports each, apart, away from the ephemeral range of free ports
    base = 20000 + (os.getpid() % 200) * 100
    head_ports, worker_ports = [*ports[2:8], base], [*ports[8:14], base + 50]
    spark_port, spark_ui, worker_ui = ports[14:17]
    ray = str(BIN / "ray")
    spark_class = Path(__import__("pyspark").__file__).parent / "bin" / "spark-class"
    java_env = dict(env, SPARK_NO_DAEMONIZE="1", SPARK_LOG_DIR=str(work), SPARK_WORKER_DIR=str(work / "spark-work"))
    try:
        c.start(
            "ray-head",
            [
                ray,
                "start",
                "--head",
                f"--port={gcs}",
                "--num-cpus=1",
                "--include-dashboard=false",
                f"--dashboard-port={dashboard}",
                *_ray_node_args(head_ports, ray_temp),
            ],
            env,
        )
        _wait_for("ray head", lambda: _port_open(gcs), 90, c, "ray-head")
        address = f"127.0.0.1:{gcs}"
        c.start(
            "ray-worker",
            [ray, "start", f"--address={address}", "--num-cpus=2", *_ray_node_args(worker_ports, None)],
            env,
        )
        c.start(
            "spark-master",
            [
                str(spark_class),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(spark_port),
                "--webui-port",
                str(spark_ui),
            ],
            java_env,
        )
        _wait_for("spark master", lambda: _port_open(spark_port), 90, c, "spark-master")
        master = f"spark://127.0.0.1:{spark_port}"
        c.start(
            "spark-worker",
            [
                str(spark_class),
                "org.apache.spark.deploy.worker.Worker",
                master,
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "1500m",
                "--webui-port",
                str(worker_ui),
                "--work-dir",
                str(work / "spark-work"),
            ],
            java_env,
        )

        def spark_workers() -> int:
            # ValueError: while the master's UI is still attaching its handlers, /json/ falls
            # through to the HTML page (seen on a loaded machine): not up yet, ask again
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{spark_ui}/json/", timeout=5) as r:
                    return int(json.load(r).get("aliveworkers", 0))
            except (OSError, ValueError):
                return 0

        _wait_for("spark worker", lambda: spark_workers() >= 1, 90, c, "spark-worker")
        nodes: list[dict] = []

        def two_ray_nodes() -> bool:
            nodes[:] = _ray_nodes(address, env)
            return sum(n["alive"] for n in nodes) >= 2

        _wait_for("ray worker node", two_ray_nodes, 120, c, "ray-worker")
        yield {
            "ray_address": address,
            "spark_master": master,
            "spark_ui": spark_ui,
            "nodes": list(nodes),
            "env": env,
            "work": work,
        }
    finally:
        c.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_daily_job_on_a_ray_and_a_spark_cluster(cluster, tmp_path):
    root = tmp_path / "run"
    cfg = {**TINY, "root": str(root), "ray_address": cluster["ray_address"], "spark_master": cluster["spark_master"]}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run(
            [str(BIN / "lfm4ads"), "run", "--config", str(path)], stdout=o, stderr=e, env=cluster["env"], timeout=1800
        ).returncode
    assert rc == 0, err.read_text()[-5000:]
    summary = json.loads(out.read_text().strip().splitlines()[-1])
    assert summary["recall"] and summary["timings"]["extract"] > 0

    # the two Ray nodes were both alive; the Spark application ran on the standalone master
    assert sum(n["alive"] for n in cluster["nodes"]) == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['spark_ui']}/json/", timeout=5) as r:
        apps = json.load(r)
    names = [a["name"] for a in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert "lfm4ads" in names, apps

    layout = RunLayout(root)
    days = sorted({p["ds"] for p in DeltaTable(str(layout.log)).partitions()})
    for name in REPRESENTATION_TABLES:
        dt = DeltaTable(str(layout.table(name)))
        table = dt.to_pyarrow_table()
        assert sorted(set(table.column("ds").to_pylist())) == days
        # one row per entity and day (independent check of the publish)
        keys = list(zip(table.column("ds").to_pylist(), table.column("entity_id").to_pylist()))
        assert len(keys) == len(set(keys)) > 0
    assert (layout.indexes / "CURRENT").is_file()
