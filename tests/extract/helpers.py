"""Hand-built sample-level extraction outputs (independent of the model) for aggregation tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contracts import CheckpointManifest, DatasetSpec, LayerInfo
from extract.samples import SamplesMarker

LAYER = "ad.mlp_2"


def fsl(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), x.shape[1])


def make_samples(
    root: Path, ds: str, n: int, seed: int, d: int = 4, users: int = 6, items: int = 5, model_version: str = "m1"
) -> tuple[Path, pa.Table]:
    """Write ``n`` random samples of day ``ds`` as an extraction output folder."""
    rng = np.random.default_rng(seed)
    day0 = datetime.strptime(ds, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    secs = np.sort(rng.choice(86400, size=n, replace=False))
    t = pa.array(((day0 + secs) * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "user_id": pa.array([f"u{k}" for k in rng.integers(0, users, n)]),
            "item_id": pa.array([f"i{k}" for k in rng.integers(0, items, n)]),
            "event_time": t,
            "scenario": pa.array(rng.integers(0, 2, n), pa.int32()),
            "sample_type": pa.array(["ad"] * n),
            "ur": fsl(rng.normal(size=(n, d))),
            "ir": fsl(rng.normal(size=(n, d))),
            "cr": fsl(rng.normal(size=(n, d))),
            "layer": pa.array([LAYER] * n),
        }
    )
    out = root / "samples" / f"ds={ds}"
    out.mkdir(parents=True, exist_ok=True)
    half = n // 2
    pq.write_table(table.slice(0, half), out / "part-00000.parquet")
    pq.write_table(table.slice(half), out / "part-00001.parquet")
    SamplesMarker(
        ds=ds,
        rows=n,
        model_version=model_version,
        log_version=0,
        layers={LAYER: "cr"},
        dims={"ur": d, "ir": d, "cr": d},
        shards=["part-00000.parquet", "part-00001.parquet"],
        fingerprint="test",
    ).write(out)
    return out, table


def fake_manifest(model_version: str = "m1", d: int = 4) -> CheckpointManifest:
    spec = DatasetSpec(name="t", scenarios={0: "a", 1: "b"}, tasks=["click"])
    return CheckpointManifest(
        model_version=model_version,
        created_at=datetime.now(timezone.utc),
        dataset=spec.canonical(),
        model_config_data={},
        config_hash="x",
        data_version="0",
        vocab_sizes={},
        layers=[
            LayerInfo(name="user_tower", dim=d, kind="UR"),
            LayerInfo(name="item_tower", dim=d, kind="IR"),
            LayerInfo(name=LAYER, dim=d, kind="CR"),
        ],
        default_cr_layer=LAYER,
    )


def numpy_decayed(tables: list[pa.Table], key: str, cutoff: float, tau: float) -> dict[str, np.ndarray]:
    """Reference: the recurrence S <- exp(-(t - t_prev)/tau) S + CR over time-ordered samples,
    then decayed from the last sample to ``cutoff``."""
    all_ = pa.concat_tables(tables)
    ids = np.asarray(all_[key].to_pylist())
    ts = all_["event_time"].cast(pa.int64()).to_numpy() / 1e6
    cr = np.asarray(all_["cr"].combine_chunks().flatten().to_numpy(), dtype=np.float64).reshape(len(ids), -1)
    out = {}
    for e in np.unique(ids):
        idx = np.flatnonzero(ids == e)
        idx = idx[np.argsort(ts[idx], kind="stable")]
        state, t_prev = np.zeros(cr.shape[1]), None
        for k in idx:
            if t_prev is not None:
                state = np.exp(-(ts[k] - t_prev) / tau) * state
            state = state + cr[k]
            t_prev = ts[k]
        out[e] = state * np.exp(-(cutoff - t_prev) / tau)
    return out


def tiny_checkpointed_run(
    root: Path, model_version: str, num_users: int, num_items: int, rows_per_day: int, seq_len: int
):
    """A 2-day generated log under ``RunLayout(root)`` and an untrained (random-weight) checkpoint
    saved through pretrain's save path: extraction needs a real checkpoint folder, not a trained
    model. Returns ``(layout, checkpoint_dir, manifest, days)``."""
    from datetime import date

    from contracts import RunLayout
    from datasources import GeneratorConfig, generate_log, read_log
    from pretrain import FeatureEncoder, FoundationModel, ModelConfig
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(root)
    gen = GeneratorConfig(
        num_users=num_users,
        num_items=num_items,
        days=2,
        rows_per_day=rows_per_day,
        seq_len=seq_len,
        windows_per_day=2,
        start_date=date(2026, 1, 1),
    )
    spec = generate_log(gen, layout.log)
    encoder = FeatureEncoder.fit(read_log(layout.log), spec, 1, None)
    mcfg = ModelConfig(
        embed_dim=8,
        d_model=8,
        num_heads=2,
        user_layers=1,
        ur_dim=8,
        ir_dim=8,
        item_hidden=16,
        cross_layers=1,
        mlp_dims=[16, 8],
    )
    model = FoundationModel(mcfg, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version=model_version,
        created_at=datetime.now(timezone.utc),
        dataset=spec.canonical(),
        model_config_data=mcfg.model_dump(mode="json"),
        config_hash=model_version,
        data_version="test",
        vocab_sizes=encoder.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
    )
    ckpt = save_checkpoint(layout.checkpoints, model, encoder, manifest)
    return layout, ckpt, manifest, ["2026-01-01", "2026-01-02"]
