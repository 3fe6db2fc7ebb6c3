"""Work units and packets of an extraction job: a function of the input only.

A unit is rows [start, stop) of consecutive row groups of one log file; its shard name
depends only on the file name, the first row group and ``start``, so a rerun of the same
input writes the same shards (and skips those a killed run finished). Packets group
consecutive units into one Ray block each (see :mod:`extract.job`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from extract.worker import open_parquet


def plan_units(uris: list[str], rows_per_unit: int) -> tuple[list[dict], int]:
    """Work units and the day's row count.

    A unit is rows [start, stop) of the concatenation of consecutive row groups
    ``row_groups`` of one file: small row groups are merged up to ``rows_per_unit`` rows
    (a small file is one unit), a large one is sliced. The shard name depends only on the
    file name, the first row group and ``start``: the same input always gives the same shards.
    """
    units, total = [], 0
    for uri in sorted(uris):
        md = open_parquet(uri).metadata
        tag = hashlib.sha1(Path(uri).name.encode()).hexdigest()[:12]
        sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        total += sum(sizes)
        g = 0
        while g < len(sizes):
            if sizes[g] > rows_per_unit:  # slice one big row group
                for start in range(0, sizes[g], rows_per_unit):
                    units.append(_unit(uri, tag, [g], start, min(sizes[g], start + rows_per_unit)))
                g += 1
                continue
            first, rows = g, 0
            while g < len(sizes) and rows + sizes[g] <= rows_per_unit:
                rows += sizes[g]
                g += 1
            if rows:
                units.append(_unit(uri, tag, list(range(first, g)), 0, rows))
    return units, total


def _unit(uri: str, tag: str, row_groups: list[int], start: int, stop: int) -> dict:
    return {
        "uri": uri,
        "row_groups": row_groups,
        "start": start,
        "stop": stop,
        "shard": f"part-{tag}-{row_groups[0]:04d}-{start:09d}.parquet",
    }


def pack_units(units: list[dict], rows_per_packet: int) -> list[list[dict]]:
    """Consecutive units grouped into packets of at most ``rows_per_packet`` rows (a
    larger unit is a packet alone): one Ray block, one scheduling round trip, per packet."""
    packets, cur, rows = [], [], 0
    for u in units:
        n = u["stop"] - u["start"]
        if cur and rows + n > rows_per_packet:
            packets.append(cur)
            cur, rows = [], 0
        cur.append(u)
        rows += n
    if cur:
        packets.append(cur)
    return packets


def packet_rows(total: int, pool: int) -> int:
    """Rows per packet: one packet per actor-pool of one (the actor streams every run in one
    pass), else two per actor so that no actor idles while another finishes. Packets are not
    capped at ``rows_per_unit``: a packet carries only unit descriptions, and the slices of
    one big row group in one packet are decoded once (in separate packets, each re-decodes
    the row group up to its first slice)."""
    return max(1, math.ceil(total / (1 if pool == 1 else 2 * pool)))
