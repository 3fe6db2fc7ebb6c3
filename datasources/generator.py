"""A generator of realistic multi-scenario ads logs with planted latent structure.

The log is driven by latent factors, so a model that learns them scores measurably
higher than one that cannot:

- each user has a static taste ``p_u`` (partly explained by age and city) plus a daily
  *interest drift* that only the behaviour sequence reveals; each item has ``q_i``
  (partly explained by its category);
- click: ``sigmoid(b_s + a_s * <p_u(t), M_s q_i> + item popularity)`` per scenario ``s``
  (scenarios share users and items, so the small scenario gains from the others);
- conversion (ad samples only; null on content samples: the task is absent there):
  clicked and ``sigmoid(c + <p_u, r_i>)`` with a low base rate, so positives are sparse;
- behaviour sequence: the user's most recent *clicked* items as of the start of the
  generation chunk (chunks are short time windows, like an hourly feature snapshot),
  so it never contains the event itself or anything later.

Deterministic given the seed; generated day by day in chunks, so memory is bounded by
one day and generated one time window (chunk) at a time.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from contracts import DatasetSpec, SequenceSpec, StrictModel
from datasources.log_store import canonical_schema, write_log_day

DEFAULT_SCENARIOS = {0: "feed", 1: "search", 2: "video", 3: "mini_game"}
DEFAULT_SCENARIO_WEIGHTS = [0.50, 0.30, 0.16, 0.04]


class GeneratorConfig(StrictModel):
    """Size and shape of a generated log. Defaults make ~100k rows in a few seconds."""

    seed: int = 0
    num_users: int = Field(4000, ge=10)
    num_items: int = Field(2000, ge=10)
    days: int = Field(8, ge=1)
    rows_per_day: int = Field(12_000, ge=1)
    start_date: date = date(2026, 1, 1)
    scenarios: dict[int, str] = Field(default_factory=lambda: dict(DEFAULT_SCENARIOS))
    scenario_weights: list[float] = Field(default_factory=lambda: list(DEFAULT_SCENARIO_WEIGHTS))
    ad_fraction: float = Field(0.5, ge=0, le=1, description="Share of items that are ads.")
    latent_dim: int = Field(8, ge=2)
    signal: float = Field(3.0, ge=0, description="Scale of the latent affinity in the click logit.")
    drift: float = Field(0.8, ge=0, description="Scale of the daily interest drift (sequence-only signal).")
    seq_len: int = Field(20, ge=1)
    windows_per_day: int = Field(
        24, ge=1, le=1440, description="Generation windows per day; sequences refresh between windows."
    )
    num_cities: int = 300
    num_categories: int = 40
    num_advertisers: int = 400


def generated_spec(cfg: GeneratorConfig) -> DatasetSpec:
    """The DatasetSpec of logs made by :func:`generate_log` (already canonical)."""
    return DatasetSpec(
        name="generated",
        scenarios=cfg.scenarios,
        sample_type="sample_type",
        tasks=["click", "conversion"],
        user_features=["age", "gender", "city", "device"],
        item_features=["category", "advertiser", "item_type"],
        sequence=SequenceSpec(item_field="item_id", max_len=cfg.seq_len, column="hist_seq", positive_task="click"),
    ).canonical()


def _zipf_probs(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** a
    p = p[rng.permutation(n)]
    return p / p.sum()


class _World:
    """The planted latent world: entity attributes, factors and per-scenario parameters."""

    def __init__(self, cfg: GeneratorConfig):
        rng = np.random.default_rng(cfg.seed)
        d, U, I = cfg.latent_dim, cfg.num_users, cfg.num_items
        self.age = rng.integers(0, 7, U)
        self.gender = rng.integers(0, 2, U)
        self.city = rng.choice(cfg.num_cities, U, p=_zipf_probs(cfg.num_cities, 1.1, rng))
        self.device = rng.integers(0, 4, U)
        age_f = rng.normal(0, 1, (7, d))
        city_f = rng.normal(0, 1, (cfg.num_cities, d))
        self.p = 0.5 * age_f[self.age] + 0.4 * city_f[self.city] + 0.7 * rng.normal(0, 1, (U, d))
        self.p /= np.linalg.norm(self.p, axis=1, keepdims=True) + 1e-9
        self.category = rng.choice(cfg.num_categories, I, p=_zipf_probs(cfg.num_categories, 1.0, rng))
        cat_f = rng.normal(0, 1, (cfg.num_categories, d))
        self.q = 0.8 * cat_f[self.category] + 0.6 * rng.normal(0, 1, (I, d))
        self.q /= np.linalg.norm(self.q, axis=1, keepdims=True) + 1e-9
        self.is_ad = rng.random(I) < cfg.ad_fraction
        self.advertiser = np.where(
            self.is_ad, rng.choice(cfg.num_advertisers, I, p=_zipf_probs(cfg.num_advertisers, 1.2, rng)), -1
        )
        self.r = rng.normal(0, 1, (I, d)) * 0.5 + self.q * 0.5
        self.item_pop = rng.normal(0, 0.5, I)
        self.user_act = _zipf_probs(U, 0.8, rng)
        self.item_p = _zipf_probs(I, 0.9, rng)
        S = len(cfg.scenarios)
        self.scen_ids = np.array(sorted(cfg.scenarios))
        self.scen_bias = rng.normal(-1.0, 0.3, S)
        self.scen_scale = cfg.signal * rng.uniform(0.8, 1.2, S)
        self.scen_M = np.eye(d)[None] + 0.3 * rng.normal(0, 1, (S, d, d)) / np.sqrt(d)
        # Each scenario favours some categories (different item mixes per scenario).
        tilt = rng.normal(0, 1.0, (S, cfg.num_categories))
        self.scen_item_p = self.item_p[None] * np.exp(tilt[:, self.category])
        self.scen_item_p /= self.scen_item_p.sum(1, keepdims=True)
        self.scen_item_cdf = np.cumsum(self.scen_item_p, axis=1)
        w = np.asarray(cfg.scenario_weights, dtype=float)
        if len(w) != S:
            raise ValueError(f"scenario_weights has {len(w)} entries for {S} scenarios")
        self.scen_w = w / w.sum()
        self.seed = cfg.seed


def _day_drift(world: _World, cfg: GeneratorConfig, day_index: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 7, day_index])
    drift = rng.normal(0, 1, world.p.shape)
    drift /= np.linalg.norm(drift, axis=1, keepdims=True) + 1e-9
    return world.p + cfg.drift * drift


def _update_history(hist: np.ndarray, hist_len: np.ndarray, users: np.ndarray, items: np.ndarray) -> None:
    """Append ``items`` (time-ordered) to each user's ring of recent clicks, in place.

    hist: [U, L] item indices, most recent last; hist_len: [U]; users, items: [K].
    """
    if len(users) == 0:
        return
    L = hist.shape[1]
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    uniq, start, counts = np.unique(users, return_index=True, return_counts=True)
    n_new = np.minimum(counts, L)
    # Position of each event from the end of its user's run; keep the last L.
    rank_from_end = (start + counts)[np.searchsorted(uniq, users)] - 1 - np.arange(len(users))
    keep = rank_from_end < L
    k_users = np.searchsorted(uniq, users[keep])
    pos = n_new[k_users] - 1 - rank_from_end[keep]
    new = np.full((len(uniq), L), -1, dtype=hist.dtype)
    new[k_users, pos] = items[keep]
    both = np.concatenate([hist[uniq], new], axis=1)  # [k, 2L]
    take = n_new[:, None] + np.arange(L)[None]
    hist[uniq] = np.take_along_axis(both, take, axis=1)
    hist_len[uniq] = np.minimum(hist_len[uniq] + counts, L)


def _sequences(hist: np.ndarray, hist_len: np.ndarray, users: np.ndarray) -> pa.ListArray:
    L = hist.shape[1]
    lengths = hist_len[users]
    rows = hist[users]  # [N, L], valid entries are the last `length`
    mask = np.arange(L)[None] >= (L - lengths)[:, None]
    values = rows[mask]
    offsets = np.zeros(len(users) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), _ids("i", values))


def _ids(prefix: str, idx: np.ndarray) -> pa.Array:
    return pa.compute.binary_join_element_wise(prefix, pa.array(idx, pa.int64()).cast(pa.string()), "")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_days(cfg: GeneratorConfig):
    """Yield ``(ds, pyarrow.Table)`` per day, canonical schema, deterministic in ``cfg``."""
    world = _World(cfg)
    spec = generated_spec(cfg)
    schema = canonical_schema(spec)
    L = cfg.seq_len
    hist = np.full((cfg.num_users, L), -1, dtype=np.int64)
    hist_len = np.zeros(cfg.num_users, dtype=np.int64)
    for day in range(cfg.days):
        d0 = datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc) + timedelta(days=day)
        ds = d0.strftime("%Y-%m-%d")
        p_day = _day_drift(world, cfg, day)
        n_chunks = cfg.windows_per_day
        chunks = []
        for c in range(n_chunks):
            rng = np.random.default_rng([cfg.seed, day, c])
            n = cfg.rows_per_day // n_chunks + (1 if c < cfg.rows_per_day % n_chunks else 0)
            lo, hi = 86400 * c / n_chunks, 86400 * (c + 1) / n_chunks
            secs = np.sort(rng.uniform(lo, hi, n))
            users = rng.choice(cfg.num_users, n, p=world.user_act)
            s_idx = rng.choice(len(world.scen_ids), n, p=world.scen_w)
            u01 = rng.random(n)
            items = np.empty(n, dtype=np.int64)
            for s in range(len(world.scen_ids)):
                sel = s_idx == s
                items[sel] = np.searchsorted(world.scen_item_cdf[s], u01[sel])
            items = np.minimum(items, cfg.num_items - 1)
            pu = p_day[users]
            mq = np.einsum("nij,nj->ni", world.scen_M[s_idx], world.q[items])
            logit = world.scen_bias[s_idx] + world.scen_scale[s_idx] * (pu * mq).sum(1) + world.item_pop[items]
            click = (rng.random(n) < _sigmoid(logit)).astype(np.float32)
            is_ad = world.is_ad[items]
            conv_logit = -2.5 + 1.5 * (world.p[users] * world.r[items]).sum(1)
            conv = click * (rng.random(n) < _sigmoid(conv_logit))
            conv = np.where(is_ad, conv, np.nan).astype(np.float32)
            seq = _sequences(hist, hist_len, users)
            _update_history(hist, hist_len, users[click > 0], items[click > 0])
            ts = (d0.timestamp() + secs) * 1e6
            chunks.append(
                pa.table(
                    {
                        "user_id": _ids("u", users),
                        "item_id": _ids("i", items),
                        "event_time": pa.array(ts.astype(np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                        "ds": pa.array([ds] * n, pa.string()),
                        "scenario": pa.array(world.scen_ids[s_idx], pa.int32()),
                        "sample_type": pa.array(np.where(is_ad, "ad", "content")),
                        "click": pa.array(click),
                        "conversion": pa.array(conv, from_pandas=True),
                        "age": _ids("a", world.age[users]),
                        "gender": _ids("g", world.gender[users]),
                        "city": _ids("c", world.city[users]),
                        "device": _ids("d", world.device[users]),
                        "category": _ids("k", world.category[items]),
                        "advertiser": _ids("adv", world.advertiser[items]),
                        "item_type": pa.array(np.where(is_ad, "ad", "content")),
                        "hist_seq": seq,
                    }
                ).cast(schema)
            )
        yield ds, pa.concat_tables(chunks)


def generate_log(cfg: GeneratorConfig, log_path: str | Path) -> DatasetSpec:
    """Write the generated log as a Delta table partitioned by ``ds`` (one commit per day)."""
    spec = generated_spec(cfg)
    for ds, table in generate_days(cfg):
        write_log_day(log_path, table, ds, spec)
    return spec
