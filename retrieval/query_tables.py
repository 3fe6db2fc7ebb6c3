"""The tables of the query tower: what it reads (snapshots of the published tables as of a day,
the users' input vectors :func:`user_inputs`, the facts of the log) and what it publishes
(``user_query``, :data:`QUERY_TABLE`, through :func:`publish_user_query`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts import RunLayout, TableProperties, config_hash
from datasources import read_log
from engines import delta_io
from extract import publish, read_asof
from extract.vectors import to_arrow
from retrieval.config import QueryTowerConfig
from retrieval.source import SourceError
from transfer.join import vectors_of

QUERY_TABLE = "user_query"


def snapshot_asof(path, day: str, mv: str | None, inclusive: bool) -> tuple[str | None, pa.Table]:
    """(the day of the newest partition <= ``day`` (< when not ``inclusive``) or None, its rows)."""
    t = read_asof(path, day, expect_model_version=mv, inclusive=inclusive)
    return (t["ds"][0].as_py() if t.num_rows else None), t


def user_inputs(layout: RunLayout, names: list[str], day: str, mv: str | None, inclusive: bool):
    """(ids (n,), X (n, sum dims), source table of the first input) for the users present in
    every input table's snapshot as of ``day``."""
    snaps = [snapshot_asof(layout.table(n), day, mv, inclusive)[1] for n in names]
    if any(s.num_rows == 0 for s in snaps):
        return np.zeros(0, object), np.zeros((0, 0), np.float32), snaps[0]
    common = set(snaps[0]["entity_id"].to_pylist())
    for s in snaps[1:]:
        common &= set(s["entity_id"].to_pylist())
    ids = np.asarray(sorted(common), dtype=object)
    parts = []
    for s in snaps:
        pos = {e: i for i, e in enumerate(s["entity_id"].to_pylist())}
        parts.append(vectors_of(s, len(s["vector"][0]))[[pos[e] for e in ids]])
    first = snaps[0].take(
        pa.array([{e: i for i, e in enumerate(snaps[0]["entity_id"].to_pylist())}[e] for e in ids], pa.int64())
    )
    return ids, np.concatenate(parts, axis=1).astype(np.float32), first


def log_facts(layout: RunLayout, days: list[str], task: str):
    """The log's rows of ``days``: user_id, item_id, ds, event_time and the ``task`` label."""
    t = read_log(layout.log, days, columns=["user_id", "item_id", "ds", "event_time", task])
    return t


def event_seconds(col) -> np.ndarray:
    """Timestamps -> seconds since the epoch (n,) float."""
    return pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False) / 1e6


def day_end(day: str) -> float:
    """The end of ``day`` (UTC midnight after it), in seconds since the epoch."""
    from datetime import datetime, timedelta, timezone

    d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
    return d.timestamp()


def publish_user_query(layout: RunLayout, tower, qcfg: QueryTowerConfig, mv: str, days: list[str], inputs_as_of) -> int:
    """Publish ``user_query`` for each of ``days``: ``tower.encode`` of the users' inputs
    ``inputs_as_of(day, inclusive=True)`` -> (ids (n,), X (n, d_in), first input table), one
    query vector (n, ``tower.out_dim``) per user; returns the table's Delta version after them."""
    props = TableProperties(
        dim=tower.out_dim, normalisation="none", source_checkpoint=mv, config_hash=config_hash(qcfg)
    )
    layer = "query_tower[" + "+".join(qcfg.inputs + ([f"history{qcfg.history}"] if qcfg.history else [])) + "]"
    qpath = layout.table(QUERY_TABLE)
    for day in days:
        ids, xd, first = inputs_as_of(day, inclusive=True)
        if len(ids) == 0:
            raise SourceError(f"{[str(layout.table(n)) for n in qcfg.inputs]}: no user vectors as of {day}")
        qv = tower.encode(xd)
        tbl = pa.table(
            {
                "entity_id": pa.array(ids.tolist(), pa.string()),
                "ds": pa.array([day] * len(ids), pa.string()),
                "model_version": pa.array([mv] * len(ids), pa.string()),
                "layer": pa.array([layer] * len(ids), pa.string()),
                "vector": to_arrow(qv),
                "updated_at": first["updated_at"].cast(pa.timestamp("us", tz="UTC")),
                "sample_count": first["sample_count"],
            }
        )
        publish(qpath, QUERY_TABLE, day, tbl, props, write_path="arrow")
    return delta_io.open_table(qpath).version()
