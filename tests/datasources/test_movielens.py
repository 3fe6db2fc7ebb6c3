import numpy as np
import pyarrow.compute as pc

from datasources import ingest, load_movielens, log_days, read_log
from datasources.movielens import SPLIT

# The protocol's table (shared/data/README.md).
PROTOCOL_SIZES = [27050, 25589, 22796, 8679, 6523, 5234, 2946, 1183]


def test_movielens_follows_the_protocol(ml100k_path, tmp_path):
    raw, spec = load_movielens(ml100k_path)
    assert raw.num_rows == 100_000
    assert np.bincount(raw["scenario"].to_numpy()).tolist() == PROTOCOL_SIZES
    assert abs(pc.mean(raw["click"]).as_py() - 0.554) < 0.001
    days = ingest(raw, spec, tmp_path / "log")
    assert log_days(tmp_path / "log") == days
    split = SPLIT.resolve(days)
    assert split["train"][-1] == "1998-01-31" and split["valid"][0] >= "1998-02-01"
    assert split["test"][0] >= "1998-03-01"
    t = read_log(tmp_path / "log", split["test"])
    assert 0 < t.num_rows < 30_000
    assert set(t.column_names) >= {"age", "gender", "occupation", "zip3", "decade", "genres", "hist_seq"}


def test_the_shipped_movielens_config_splits_at_the_protocol_dates():
    from pathlib import Path

    import yaml

    from contracts import SplitConfig

    conf = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "movielens.yaml").read_text())
    assert SplitConfig.model_validate(conf["split"]) == SPLIT
