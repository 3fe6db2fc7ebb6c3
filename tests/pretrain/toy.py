"""A small canonical log built by hand (no datasources dependency), with a planted signal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from contracts import DatasetSpec

SPEC = DatasetSpec(
    name="toy",
    scenarios={1: "feed", 2: "search", 7: "small"},
    sample_type="sample_type",
    tasks=["click", "conversion"],
    user_features=["age", "city"],
    item_features=["category"],
).canonical()


def toy_table(n: int = 400, seed: int = 0, days: tuple[str, ...] = ("2024-01-01",), max_len: int = 5) -> pa.Table:
    """Users and items with latent factors; click ~ sigmoid(3 * u.i); conversion sparse;
    scenario 7 has no conversion task (null)."""
    n_users, n_items = 40, 30
    world = np.random.default_rng(1234)  # the planted factors are the same for every sample seed
    uf = world.normal(size=(n_users, 4))
    itf = world.normal(size=(n_items, 4))
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    p = 1 / (1 + np.exp(-3 * (uf[u] * itf[i]).sum(1)))
    click = (rng.random(n) < p).astype(np.float32)
    conv = ((rng.random(n) < 0.2) & (click == 1)).astype(np.float32)
    scen = rng.choice([1, 2, 7], size=n, p=[0.6, 0.3, 0.1]).astype(np.int32)
    conv_col = pa.array([None if s == 7 else float(c) for s, c in zip(scen, conv)], type=pa.float32())
    day = np.array(days)[np.arange(n) * len(days) // n]
    t0 = [datetime.fromisoformat(d).replace(tzinfo=timezone.utc) for d in day]
    times = [t + timedelta(seconds=int(s)) for t, s in zip(t0, rng.integers(0, 86000, n))]
    hist = [[f"i{x}" for x in rng.integers(0, n_items, rng.integers(0, max_len + 1))] for _ in range(n)]
    return pa.table(
        {
            "user_id": pa.array([f"u{x}" for x in u]),
            "item_id": pa.array([f"i{x}" for x in i]),
            "event_time": pa.array(times, type=pa.timestamp("us", tz="UTC")),
            "ds": pa.array(day.tolist()),
            "scenario": pa.array(scen, type=pa.int32()),
            "sample_type": pa.array(np.where(rng.random(n) < 0.7, "ad", "content").tolist()),
            "click": pa.array(click, type=pa.float32()),
            "conversion": conv_col,
            "age": pa.array([f"a{x % 5}" for x in u]),
            "city": pa.array([f"c{x % 7}" for x in u]),
            "category": pa.array([f"k{x % 6}" for x in i]),
            "hist_seq": pa.array(hist, type=pa.list_(pa.string())),
        }
    )
