"""The popularity fallback and the engaged items, read from a real canonical log, against a
plain loop over the rows written; a named positive task; an unknown task refuses to start."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from retrieval.fallback import empty_history, load_history
from retrieval.http_served import ServiceStartError
from retrieval.service import make_server
from tests.retrieval.test_service import DS, FAST, LOG_DAYS, N_ITEMS, log_rows, make_run, write_log


def _reference(rows, upto: str, task: str | None):
    """(ranked items, counts, user -> items) from the rows, written from the definition."""
    counts, seen = Counter(), {}
    for u, i, d, click, conv in rows:
        if d > upto or not i.startswith("i"):  # x* items are not in the index
            continue
        seen.setdefault(u, set()).add(i)  # any row is an interaction
        if (conv if task == "conversion" else click) == 1:  # None: the log's first task, click
            counts[i] += 1
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    return ranked, [counts[i] for i in ranked], seen


@pytest.mark.parametrize("task", [None, "conversion"])
def test_history_matches_a_plain_loop(tmp_path, task):
    rows = log_rows()
    write_log(tmp_path / "log", rows)
    ids = np.asarray([f"i{j}" for j in range(N_ITEMS)], dtype=object)
    hist = load_history(tmp_path / "log", DS, ids, task)
    ranked, counts, seen = _reference(rows, DS, task)
    assert ids[hist.popular_rows].tolist() == ranked and hist.popular_counts.tolist() == counts
    assert hist.days == 2 and hist.positive_rows == sum(counts)
    assert {u: set(ids[r].tolist()) for u, r in hist.engaged.items()} == seen
    top, _ = hist.popular(5, exclude=hist.seen("u2"))
    assert ids[top].tolist() == [i for i in ranked if i not in seen.get("u2", set())][:5]
    # a served ds before the log: nothing to fall back on
    assert load_history(tmp_path / "log", "2025-12-31", ids).popular_rows.size == 0
    assert empty_history(DS).seen("u2").size == 0
    assert LOG_DAYS[-1] > DS  # the last log day must not count


def test_unknown_positive_task_refuses_to_start(tmp_path):
    run = make_run(tmp_path)
    layout = run["layout"]
    with pytest.raises(ServiceStartError) as e:
        make_server(
            layout.indexes, layout.table("user_query"), port=0, log_path=layout.log, positive_task="purchase", **FAST
        )
    assert e.value.exit_code == 2 and "'purchase' is not a task of the log" in str(e.value)
