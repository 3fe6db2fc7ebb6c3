"""A tiny canonical log whose click label is planted in published user/item vectors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from contracts import DatasetSpec, RunLayout, SequenceSpec
from datasources.log_store import canonical_schema, write_log_day
from tests.transfer.reptables import write_rep_day

SPEC = DatasetSpec(
    name="tiny",
    scenarios={0: "big", 1: "small"},
    sample_type="sample_type",
    tasks=["click", "conversion"],
    user_features=["age"],
    item_features=["category"],
    sequence=SequenceSpec(item_field="item_id", max_len=4, column="hist_seq"),
).canonical()
DAYS = ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]


def make_run(
    root: Path, rows_per_day: int = 1500, dim: int = 4, seed: int = 0, signal: str = "dot"
) -> tuple[Path, DatasetSpec]:
    """Log under ``root/log`` and user_ur/item_ir (true latents) + user_cr/item_cr
    (noise) published for 2026-01-01, before every log day. Returns (log path, spec).

    ``signal="dot"``: click logit ``1.5 <p_u, q_i>`` (an interaction).
    ``signal="cold"``: logit ``1.5 (p_u[0] + q_i[0])`` and the test day's users never
    appear in earlier days (cold start: their id embeddings are OOV, only the
    published vectors know them)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 400, 200
    pu, qi = rng.normal(size=(n_users, dim)), rng.normal(size=(n_items, dim))
    layout = RunLayout(root)
    for d in DAYS:
        if signal == "cold":
            lo, hi = (n_users // 2, n_users) if d == DAYS[-1] else (0, n_users // 2)
            u = rng.integers(lo, hi, rows_per_day)
        else:
            u = rng.integers(0, n_users, rows_per_day)
        i = rng.integers(0, n_items, rows_per_day)
        if signal == "cold":
            logit = 1.5 * (pu[u, 0] + qi[i, 0])
        else:
            logit = 1.5 * (pu[u] * qi[i]).sum(1) - 0.5
        click = (rng.random(rows_per_day) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        conv = np.where(click == 1, (rng.random(rows_per_day) < 0.3), 0).astype(np.float32)
        is_ad = rng.random(rows_per_day) < 0.5
        t0 = datetime.fromisoformat(d).replace(tzinfo=timezone.utc)
        table = pa.table(
            {
                "user_id": [f"u{k}" for k in u],
                "item_id": [f"i{k}" for k in i],
                "event_time": pa.array(
                    [t0 + timedelta(seconds=int(s)) for s in rng.integers(0, 86400, rows_per_day)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "ds": [d] * rows_per_day,
                "scenario": pa.array(rng.integers(0, 2, rows_per_day), pa.int32()),
                "sample_type": np.where(is_ad, "ad", "content").tolist(),
                "click": click,
                "conversion": pa.array(np.where(is_ad, conv, np.nan), pa.float32(), from_pandas=True),
                "age": [f"a{k % 5}" for k in u],
                "category": [f"c{k % 7}" for k in i],
                "hist_seq": [[f"i{x}" for x in rng.integers(0, n_items, 3)] for _ in range(rows_per_day)],
            }
        )
        write_log_day(layout.log, table.cast(canonical_schema(SPEC)), d, SPEC)
    ids_u, ids_i = [f"u{k}" for k in range(n_users)], [f"i{k}" for k in range(n_items)]
    # leave 10% of users unpublished: they must fall back to the learned default
    keep = rng.random(n_users) > 0.1
    write_rep_day(layout.table("user_ur"), "user_ur", "2026-01-01", [x for x, k in zip(ids_u, keep) if k], pu[keep])
    write_rep_day(layout.table("item_ir"), "item_ir", "2026-01-01", ids_i, qi)
    write_rep_day(layout.table("user_cr"), "user_cr", "2026-01-01", ids_u, rng.normal(size=(n_users, 6)))
    write_rep_day(layout.table("item_cr"), "item_cr", "2026-01-01", ids_i, rng.normal(size=(n_items, 6)))
    return layout.log, SPEC
