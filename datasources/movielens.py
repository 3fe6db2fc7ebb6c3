"""MovieLens-100K from the original GroupLens files, mapped to the data contract.

The protocol (shared/data/README.md), so numbers compare across systems:

- label ``click`` = ``rating >= 4``;
- scenario from the movie's *first* genre flag in ``u.item`` (column order of
  ``u.genre``), grouped into 8 scenarios (:data:`GENRE_SCENARIO`);
- time split on the rating timestamp (UTC): train before 1998-02-01, validation in
  February 1998, test from 1998-03-01 on (:data:`SPLIT`);
- features: user id, age (bucketed as in MovieLens-1M), gender, occupation, zip3;
  item id, release decade, and the genre flags as one categorical value (the sorted
  '|'-joined genre names, e.g. ``Action|Sci-Fi``);
- behaviour sequence: the user's previously *rated* movies (every rating is a watch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from contracts import DatasetSpec, SequenceSpec, SplitConfig

GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
SCENARIOS = {0: "drama", 1: "action", 2: "comedy", 3: "crime", 4: "family", 5: "adventure", 6: "horror", 7: "other"}
GENRE_SCENARIO = {
    "Drama": 0,
    "Action": 1,
    "Comedy": 2,
    "Crime": 3,
    "Mystery": 3,
    "Film-Noir": 3,
    "Thriller": 3,
    "Animation": 4,
    "Children's": 4,
    "Musical": 4,
    "Fantasy": 4,
    "Adventure": 5,
    "Sci-Fi": 5,
    "Western": 5,
    "War": 5,
    "Horror": 6,
    "Documentary": 7,
    "Romance": 7,
    "unknown": 7,
}
# The protocol's time split; configs/movielens.yaml sets the same dates as the run's `split`
# (tests/datasources/test_movielens.py holds the two equal). `SPLIT.resolve(days)` splits a log.
SPLIT = SplitConfig(valid_start="1998-02-01", test_start="1998-03-01")
AGE_BUCKETS = [18, 25, 35, 45, 50, 56]

SPEC = DatasetSpec(
    name="movielens-100k",
    user_id="user_id",
    item_id="item_id",
    event_time="timestamp",
    scenario="scenario",
    scenarios=SCENARIOS,
    tasks=["click"],
    user_features=["age", "gender", "occupation", "zip3"],
    item_features=["decade", "genres"],
    sequence=SequenceSpec(item_field="item_id", max_len=20),
)


def _read(path: Path, names: list[str], sep: str) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file not found: {path}")
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, encoding="latin-1"),
        parse_options=pacsv.ParseOptions(delimiter=sep, quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )


def load_movielens(path: str | Path) -> tuple[pa.Table, DatasetSpec]:
    """Read ``u.data``, ``u.user``, ``u.item`` under ``path`` -> (raw table, its DatasetSpec)."""
    path = Path(path)
    data = _read(path / "u.data", ["user_id", "item_id", "rating", "timestamp"], "\t")
    users = _read(path / "u.user", ["user_id", "age", "gender", "occupation", "zip"], "|")
    items = _read(path / "u.item", ["item_id", "title", "release", "video", "url", *GENRES], "|")

    ages = np.asarray(users["age"].to_pylist(), dtype=int)
    age_bucket = np.searchsorted(AGE_BUCKETS, ages, side="right")
    user_cols = {
        "user_id": users["user_id"].to_pylist(),
        "age": [f"age{b}" for b in age_bucket],
        "gender": users["gender"].to_pylist(),
        "occupation": users["occupation"].to_pylist(),
        "zip3": [z[:3] for z in users["zip"].to_pylist()],
    }
    flags = np.stack([np.asarray(items[g].to_pylist(), dtype=int) for g in GENRES], axis=1)
    first = flags.argmax(axis=1)  # first set flag in u.genre order; all-zero rows -> 'unknown'
    scenario = [GENRE_SCENARIO[GENRES[f]] for f in first]
    genres = ["|".join(sorted(GENRES[j] for j in np.flatnonzero(row))) or "unknown" for row in flags]
    years = [r[-4:] if r else "" for r in items["release"].to_pylist()]
    decade = [f"{y[:3]}0s" if y.isdigit() else "unknown" for y in years]
    item_cols = {"item_id": items["item_id"].to_pylist(), "scenario": scenario, "decade": decade, "genres": genres}

    u_idx = {u: i for i, u in enumerate(user_cols["user_id"])}
    i_idx = {it: i for i, it in enumerate(item_cols["item_id"])}
    du = np.array([u_idx[u] for u in data["user_id"].to_pylist()])
    di = np.array([i_idx[i] for i in data["item_id"].to_pylist()])
    rating = np.asarray(data["rating"].to_pylist(), dtype=int)
    out = {
        "user_id": data["user_id"],
        "item_id": data["item_id"],
        "timestamp": pa.array(np.asarray(data["timestamp"].to_pylist(), dtype=np.int64)),
        "scenario": pa.array(np.asarray(item_cols["scenario"])[di], pa.int32()),
        "click": pa.array((rating >= 4).astype(np.int8)),
        "rating": pa.array(rating.astype(np.int8)),
    }
    for f in ("age", "gender", "occupation", "zip3"):
        out[f] = pa.array(np.asarray(user_cols[f], dtype=object)[du], pa.string())
    for f in ("decade", "genres"):
        out[f] = pa.array(np.asarray(item_cols[f], dtype=object)[di], pa.string())
    return pa.table(out), SPEC
