"""Ray Data extraction on a tiny real checkpoint: values, one job for many days, exactly-once
shards (a real SIGKILL), bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.extract_timing import timed_extract_days
from engines import delta_io
from extract import AggregateConfig, ExtractConfig, aggregate_day, extract_day, extract_days, read_asof
from extract.aggregate_inputs import cutoff_seconds
from extract.samples import read_marker
from extract.units import pack_units, plan_units
from tests.extract.helpers import numpy_decayed

CFG = ExtractConfig(rows_per_unit=128, batch_size=50)


@pytest.fixture(scope="module")
def timed(tiny_run, ray_cluster):
    """Both days in ONE Ray Data job, ``extract_days`` step by step under the benchmark's
    clock (its phases and the actor's peak RSS beside the results)."""
    layout, ckpt, days = tiny_run
    results, phases, actor_rss = timed_extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, CFG)
    return layout, ckpt, days, [results[d] for d in days], phases, actor_rss


@pytest.fixture(scope="module")
def extracted(timed):
    return timed[:4]


def _mat(table: pa.Table, col: str) -> np.ndarray:
    return np.asarray(table[col].combine_chunks().flatten().to_numpy()).reshape(table.num_rows, -1)


def _rows(out_dir, shards) -> pa.Table:
    return pa.concat_tables([pq.read_table(out_dir / s) for s in shards])  # shard order = input order


def test_outputs_equal_a_direct_forward_pass(extracted):
    import torch

    from pretrain import load_checkpoint

    layout, ckpt, days, results = extracted
    loaded = load_checkpoint(ckpt)
    layer = loaded.manifest.default_cr_layer
    for d, r in zip(days, results):
        assert r.layers == [layer] and r.rows > 0 and not r.skipped
        log = pa.concat_tables([pq.read_table(u) for u in delta_io.day_file_uris(layout.log, d)])
        with torch.inference_mode():
            ref = loaded.model.representations(
                loaded.encoder.encode(log, require_labels=False), ["user_tower", "item_tower", layer]
            )
        out = _rows(r.out_dir, r.shards)
        assert out.num_rows == log.num_rows == read_marker(r.out_dir).rows
        assert out["user_id"].to_pylist() == log["user_id"].to_pylist()
        assert out.schema.field("cr").type == pa.list_(pa.float32(), loaded.manifest.layer(layer).dim)
        assert set(out["layer"].to_pylist()) == {layer}
        for col, name in (("ur", "user_tower"), ("ir", "item_tower"), ("cr", layer)):
            np.testing.assert_allclose(_mat(out, col), ref[name].numpy(), rtol=1e-4, atol=1e-5)
        health = json.loads((r.out_dir / "_health.json").read_text())
        assert health["rows"] == r.rows and health["columns"]["cr"]["nan_inf_rows"] == 0
        assert health["columns"]["cr"]["effective_rank"] > 1


def test_the_benchmark_times_the_job_and_its_actor_runs_at_the_drivers_niceness(timed):
    """The phase profile the benchmark takes adds up (timestamps from the actor vs the
    driver's clock), and the actor runs at the driver's niceness, 0 unless the tests run
    niced (Ray's default adds 15: it starves the actor on a shared machine)."""
    _, _, _, results, ph, actor_rss = timed
    assert all(r.seconds == results[0].seconds > 0 for r in results)  # one job for both days
    assert ph["actors"] == 1 and ph["actor_nice"] == os.nice(0) and actor_rss > 0
    assert min(ph["plan_s"], ph["to_actor_init_s"], ph["actor_init_s"], ph["busy_s"], ph["finalise_s"]) >= 0
    parts = ph["plan_s"] + ph["run_s"] + ph["finalise_s"]
    assert abs(parts - ph["total_s"]) < 0.01 and ph["busy_s"] <= ph["run_s"] + 0.01
    assert ph["to_actor_init_s"] + ph["actor_init_s"] + ph["ready_to_first_packet_s"] <= ph["run_s"] + 0.01


def test_units_and_packets_are_a_function_of_the_input(extracted, tmp_path):
    layout, ckpt, days, results = extracted
    r = results[0]
    units, total = plan_units(delta_io.day_file_uris(layout.log, days[0]), CFG.rows_per_unit)
    assert r.shards == sorted(u["shard"] for u in units) and len(r.shards) >= 2 and total == r.rows
    assert [u["stop"] - u["start"] for u in units] and max(u["stop"] - u["start"] for u in units) <= 128
    # a small file is one unit over all of its row groups; a large row group is sliced
    f = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), f, row_group_size=3)  # row groups 3,3,3,1
    whole, n = plan_units([str(f)], 100)
    assert n == 10 and len(whole) == 1 and whole[0]["row_groups"] == [0, 1, 2, 3] and whole[0]["stop"] == 10
    parts, _ = plan_units([str(f)], 2)
    assert [(u["row_groups"], u["start"], u["stop"]) for u in parts] == [
        ([0], 0, 2),
        ([0], 2, 3),
        ([1], 0, 2),
        ([1], 2, 3),
        ([2], 0, 2),
        ([2], 2, 3),
        ([3], 0, 1),
    ]
    assert len({u["shard"] for u in parts}) == len(parts)
    packets = pack_units(parts, 4)
    assert [len(p) for p in packets] == [2, 2, 3] and sum(packets, []) == parts
    # a finished day is recognised and skipped, all days of a call at once
    marker_mtime = (r.out_dir / "_SUCCESS").stat().st_mtime_ns
    again = extract_days(ckpt, layout.log, days, {d: layout.samples(d) for d in days}, CFG)
    assert all(a.skipped for a in again.values()) and again[days[0]].rows == r.rows
    assert (r.out_dir / "_SUCCESS").stat().st_mtime_ns == marker_mtime


def test_one_day_alone_equals_days_together_and_several_layers(extracted, tmp_path):
    """extract_day (one job per day) gives the same shards and rows as extract_days; with a
    second layer, ``cr`` is unchanged and ``cr__<layer>`` is added. Then ``force`` recomputes."""
    layout, ckpt, days, results = extracted
    r = results[1]
    default = r.layers[0]
    cfg = CFG.model_copy(update={"layers": [default, "ad.cross_1"]})
    alone = extract_day(ckpt, layout.log, days[1], tmp_path / "s", cfg)
    marker = read_marker(alone.out_dir)
    assert marker.layers == {default: "cr", "ad.cross_1": "cr__ad_cross_1"}
    assert alone.shards == r.shards and alone.rows == r.rows
    for s in r.shards:
        a, b = pq.read_table(alone.out_dir / s), pq.read_table(r.out_dir / s)
        assert a.select(["user_id", "item_id", "event_time", "layer"]).equals(
            b.select(["user_id", "item_id", "event_time", "layer"])
        )
        for col in ("ur", "ir", "cr"):
            np.testing.assert_allclose(_mat(a, col), _mat(b, col), rtol=1e-5, atol=1e-6)
        assert a.schema.field("cr__ad_cross_1").type == pa.list_(pa.float32(), marker.dims["cr__ad_cross_1"])
    forced = extract_day(ckpt, layout.log, days[1], tmp_path / "s", cfg.model_copy(update={"force": True}))
    assert not forced.skipped and forced.resumed_shards == 0 and forced.rows == r.rows
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([*r.shards, "_SUCCESS", "_health.json"])


KILL_SCRIPT = """
import sys, json
from pathlib import Path
from extract import ExtractConfig, extract_days
ckpt, log, out, address, days = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
cfg = ExtractConfig(rows_per_unit=20, batch_size=1, ray_address=address)
extract_days(ckpt, log, days, {d: out / f"ds={d}" for d in days}, cfg)
"""


def test_sigkilled_run_resumes_to_the_uninterrupted_output(extracted, tmp_path):
    """A real kill: a subprocess extracting both days (slowed by batch_size=1) joins the
    session's Ray cluster and is SIGKILLed when its first shard appears; the rerun resumes
    and its rows equal the uninterrupted run's (no duplicate, no missing row)."""
    import ray

    layout, ckpt, days, results = extracted
    out = tmp_path / "samples"
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(ckpt), str(layout.log), str(out), address, json.dumps(days)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 90
    while not list(out.glob(".ds=*.inprogress-*/part-*.parquet")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(out.glob(".ds=*.inprogress-*/part-*.parquet"))
    planned = sum(len(plan_units(delta_io.day_file_uris(layout.log, d), 20)[0]) for d in days)
    assert 1 <= len(finished) < planned and not list(out.glob("ds=*"))  # killed part-way, nothing published
    cfg = ExtractConfig(rows_per_unit=20, batch_size=50)
    resumed = extract_days(ckpt, layout.log, days, {d: out / f"ds={d}" for d in days}, cfg)
    assert sum(r.resumed_shards for r in resumed.values()) >= 1
    assert not list(out.glob(".ds=*"))  # no in-progress folder or stray temporary file left
    for d, ref in zip(days, results):
        got, want = _rows(resumed[d].out_dir, resumed[d].shards), _rows(ref.out_dir, ref.shards)
        assert got.num_rows == want.num_rows == resumed[d].rows
        keys = ["user_id", "item_id", "event_time"]
        assert got.select(keys).equals(want.select(keys))
        np.testing.assert_allclose(_mat(got, "cr"), _mat(want, "cr"), rtol=1e-4, atol=1e-5)
        assert not [p for p in resumed[d].out_dir.iterdir() if p.name.endswith(".tmp")]


def test_bad_input_fails_before_any_output(tiny_run, tmp_path):
    layout, ckpt, days = tiny_run
    out = tmp_path / "samples" / "ds=x"
    with pytest.raises(ValueError, match=r"unknown CR layer\(s\) \['ad.mlp_9'\].*valid: \['ad.cross_1'"):
        extract_day(ckpt, layout.log, days[0], out, ExtractConfig(layers=["ad.mlp_9"]))
    with pytest.raises(ValueError, match="no rows for ds='2030-01-01'"):
        extract_day(ckpt, layout.log, "2030-01-01", out)
    # one bad day fails the whole multi-day call before any day is written
    with pytest.raises(ValueError, match="no rows for ds='2030-01-01'"):
        extract_days(
            ckpt,
            layout.log,
            [days[0], "2030-01-01"],
            {days[0]: tmp_path / "samples" / "a", "2030-01-01": tmp_path / "samples" / "b"},
        )
    with pytest.raises(ValueError, match=r"out_dirs has no folder for day\(s\) \['2026-01-02'\]"):
        extract_days(ckpt, layout.log, days, {days[0]: out})
    with pytest.raises(ValueError, match="each day at most once"):
        extract_days(ckpt, layout.log, [days[0], days[0]], {days[0]: out})
    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["dataset"]["tasks"] = ["click", "purchase"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="does not match the log"):
        extract_day(bad, layout.log, days[0], out)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        extract_day(tmp_path / "nope", layout.log, days[0], out)
    assert not (tmp_path / "samples").exists()


def test_gpus_that_the_cluster_lacks_fail_before_any_output(tiny_run, ray_cluster, tmp_path):
    """num_gpus > 0 on a cluster without GPUs: a clear error (Ray Data would wait forever)."""
    import ray

    if ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("this cluster has a GPU")
    layout, ckpt, days = tiny_run
    with pytest.raises(ValueError, match=r"num_gpus=1 per actor, but the Ray cluster has 0 GPU"):
        extract_day(ckpt, layout.log, days[0], tmp_path / "samples" / "ds=x", ExtractConfig(num_gpus=1))
    assert not (tmp_path / "samples").exists()


def test_extract_then_aggregate_end_to_end(extracted, spark):
    from pretrain import load_checkpoint

    layout, ckpt, days, results = extracted
    manifest = load_checkpoint(ckpt).manifest
    # every sample folded (the reference below does): ad-only folding has its own test in test_aggregate.py
    cfg = AggregateConfig(tau_seconds=3 * 86400, normalisation="none", cr_samples="all")
    # publishing only the last day still folds in the earlier extracted (unpublished) day
    d = days[-1]
    versions = aggregate_day(layout.samples(d), layout.root / "tables", d, manifest, cfg, spark=spark)
    assert set(versions) == {"user_ur", "item_ir", "user_cr", "item_cr"}
    samples = [_rows(r.out_dir, r.shards) for r in results]
    ref = numpy_decayed(samples, "item_id", cutoff_seconds(days[-1]), cfg.tau_seconds)
    got = read_asof(
        layout.table("item_cr"),
        days[-1],
        inclusive=True,
        expect_model_version=manifest.model_version,
        expect_dim=manifest.layer(manifest.default_cr_layer).dim,
    )
    vec = dict(zip(got["entity_id"].to_pylist(), _mat(got, "vector")))
    assert set(vec) == set(ref)
    for e, v in ref.items():
        np.testing.assert_allclose(vec[e], v, rtol=1e-5, atol=1e-5)


def test_health_merges_shard_sums_like_a_numpy_reference(extracted, tmp_path):
    """``_health.json`` (merged from the actor's per-shard sums) equals numpy over all rows,
    and equals the health recomputed from the shards alone (a shard without a stats file)."""
    from extract.health import VectorAccumulator, samples_health, vector_stats
    from pretrain.metrics import effective_rank

    layout, ckpt, days, results = extracted
    r = results[0]
    health = json.loads((r.out_dir / "_health.json").read_text())
    assert not (r.out_dir / "_stats").exists()  # merged, then removed
    out = _rows(r.out_dir, r.shards)
    assert health["users"] == len(set(out["user_id"].to_pylist()))
    assert health["items"] == len(set(out["item_id"].to_pylist()))
    assert health["coverage_rows"] == 1.0 and health["log_rows"] == r.rows
    for col in ("ur", "ir", "cr"):
        x = _mat(out, col).astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        got = health["columns"][col]
        assert got["rows"] == len(x) and got["nan_inf_rows"] == 0 and got["zero_rows"] == 0
        np.testing.assert_allclose(
            [got["norm_mean"], got["norm_std"], got["norm_min"], got["norm_max"]],
            [norms.mean(), norms.std(), norms.min(), norms.max()],
            rtol=1e-9,
        )
        assert got["effective_rank"] == pytest.approx(effective_rank(x[:4096]), rel=1e-9)
    dims = read_marker(r.out_dir).dims
    again = samples_health(r.out_dir, dims, r.rows, shards=r.shards)  # no _stats: recomputed
    assert {k: v for k, v in again.items() if k != "columns"} == {k: v for k, v in health.items() if k != "columns"}
    for c in dims:
        for k, v in health["columns"][c].items():
            assert again["columns"][c][k] == pytest.approx(v, rel=1e-9), (c, k)
    # NaN/inf and all-zero rows, accumulated in pieces and merged, vs one numpy pass
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    x[3, 1], x[7, 0], x[9] = np.nan, np.inf, 0.0
    acc = VectorAccumulator()
    for part in (x[:20], x[20:]):
        piece = VectorAccumulator()
        piece.update(part.astype(np.float32))
        acc.merge(VectorAccumulator.from_state(json.loads(json.dumps(piece.state()))))
    ref = vector_stats(x.astype(np.float32).astype(np.float64))
    got = acc.summary(4)
    assert got["nan_inf_rows"] == ref["nan_inf_rows"] == 2 and got["zero_rows"] == ref["zero_rows"] == 1
    for k in ("norm_mean", "norm_std", "norm_min", "norm_max"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6)
    empty = VectorAccumulator.from_state(json.loads(json.dumps(VectorAccumulator().state())))
    assert empty.summary(4)["rows"] == 0 and np.isnan(empty.summary(4)["norm_mean"])


def test_a_run_of_slices_is_streamed_once_and_resumes_inside_the_run(tiny_run, tmp_path):
    """The actor (in-process, no Ray) streams the slices of one row group in one pass: the
    shards equal those of one unit at a time, also when shards in the middle already exist."""
    from extract.worker import ExtractWorker, runs_of
    from pretrain import load_checkpoint

    layout, ckpt, days = tiny_run
    uri = delta_io.day_file_uris(layout.log, days[0])[0]
    src = pq.read_table(uri)
    f = tmp_path / "big.parquet"
    pq.write_table(src, f, row_group_size=src.num_rows)  # ONE row group, sliced into 7 units
    units, _ = plan_units([str(f)], 45)
    layer = load_checkpoint(ckpt).manifest.default_cr_layer
    worker = ExtractWorker(str(ckpt), [layer], batch_size=32, torch_threads=1)  # batches straddle units
    one, run = tmp_path / "one", tmp_path / "run"
    one.mkdir(), run.mkdir()
    for u in units:
        worker.run_unit(u["uri"], u["row_groups"], u["start"], u["stop"], u["shard"], str(one))
    todo = [{**u, "out": str(run)} for u in units]
    assert len(runs_of(todo)) == 1 and len(todo) == 7
    shutil.copy(one / units[2]["shard"], run / units[2]["shard"])  # done by a killed run
    shutil.copy(one / units[3]["shard"], run / units[3]["shard"])
    assert worker.run_units(todo) == [u["stop"] - u["start"] for u in units]
    assert sorted(p.name for p in run.glob("part-*")) == sorted(u["shard"] for u in units)
    assert len(list((run / "_stats").glob("*.json"))) == 5 and not list(run.glob(".*.tmp"))
    for u in units:
        a, b = pq.read_table(run / u["shard"]), pq.read_table(one / u["shard"])
        assert a.select(["user_id", "item_id", "event_time"]).equals(b.select(["user_id", "item_id", "event_time"]))
        np.testing.assert_allclose(_mat(a, "cr"), _mat(b, "cr"), rtol=1e-5, atol=1e-6)
    got = pa.concat_tables([pq.read_table(run / u["shard"]) for u in units])
    assert got["user_id"].to_pylist() == src["user_id"].to_pylist()
    # units of other row groups or files are separate runs
    assert len(runs_of([*todo[:2], {**todo[2], "row_groups": [1]}])) == 2
