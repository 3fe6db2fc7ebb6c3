"""The vocabulary fitted by the distributed per-file count (Ray tasks, merged on the driver)
equals a plain single-process count of the concatenated rows (collections.Counter, written
from the rule: count >= min_count, by count descending then value, at most max_vocab), and a
bad row fails with the file, column, row in that file and value."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts import InputError
from pretrain import FeatureEncoder
from pretrain.vocab import count_and_validate, fit_vocabulary
from tests.pretrain.toy import SPEC, toy_table


def _write(tmp_path, tables):
    files = []
    for i, t in enumerate(tables):
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(t, f, row_group_size=97)
        files.append(str(f))
    return files


def _reference_vocab(rows: list[dict], col: str, min_count: int, max_vocab: int | None) -> list[str]:
    c: Counter = Counter()
    for r in rows:
        if r[col] is not None:
            c[str(r[col])] += 1
        if col == SPEC.sequence.item_field:
            c.update(str(x) for x in (r["hist_seq"] or []) if x is not None)
    kept = sorted(((v, n) for v, n in c.items() if n >= min_count), key=lambda vn: (-vn[1], vn[0]))
    return [v for v, _ in kept][:max_vocab]


@pytest.mark.parametrize("min_count,max_vocab", [(1, None), (3, 10)])
def test_distributed_count_equals_single_process_count(tmp_path, ray_cluster, min_count, max_vocab):
    tables = [toy_table(400, seed=1), toy_table(250, seed=2), toy_table(330, seed=3)]
    files = _write(tmp_path, tables)
    enc = fit_vocabulary(files, SPEC, min_count, max_vocab)
    rows = pa.concat_tables(tables).to_pylist()
    for col in SPEC.categorical_columns:
        assert enc.vocabs[col] == _reference_vocab(rows, col, min_count, max_vocab), col
    # and the in-memory fit agrees (extraction and downstream still use it)
    assert enc.vocabs == FeatureEncoder.fit(pa.concat_tables(tables), SPEC, min_count, max_vocab).vocabs
    assert enc.to_json() == FeatureEncoder.fit(pa.concat_tables(tables), SPEC, min_count, max_vocab).to_json()


def test_bad_row_names_file_column_row_and_value(tmp_path, ray_cluster):
    good, bad = toy_table(300, seed=1), toy_table(300, seed=2)
    clicks = bad["click"].to_pylist()
    clicks[250] = 2.0  # in the third row group of the file: the row number is the file's
    bad = bad.set_column(bad.column_names.index("click"), "click", pa.array(clicks, pa.float32()))
    files = _write(tmp_path, [good, bad])
    with pytest.raises(InputError, match=r"part-1\.parquet: label column 'click': value 2\.0 at row 250 is not 0, 1"):
        fit_vocabulary(files, SPEC)
    # the same line from the task body in-process (what the Ray task returns)
    assert "at row 250" in count_and_validate(files[1], SPEC.model_dump_json())


def test_unknown_scenario_and_missing_column_are_named(tmp_path):
    t = toy_table(120, seed=4)
    scen = t["scenario"].to_pylist()
    scen[117] = 99
    t2 = t.set_column(t.column_names.index("scenario"), "scenario", pa.array(scen, pa.int32()))
    files = _write(tmp_path, [t2, t.drop_columns(["city"])])
    msg = count_and_validate(files[0], SPEC.model_dump_json())
    assert msg.startswith(files[0]) and "unknown scenario 99 at row 117" in msg
    assert "column(s) ['city'] missing" in count_and_validate(files[1], SPEC.model_dump_json())
