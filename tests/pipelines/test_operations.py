"""Operations: JSON logs carry the step fields; the chain reports each step's start."""

import json
import logging

from pipelines import RunConfig, run_pipeline
from pipelines.cli import JsonFormatter


def test_json_log_line_has_the_extra_fields():
    rec = logging.makeLogRecord(
        {
            "name": "lfm4ads",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "step %s done",
            "args": ("extract",),
            "ds": "2026-01-02",
            "step": "extract",
            "seconds": 1.5,
        }
    )
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "step extract done" and out["level"] == "INFO"
    assert (out["ds"], out["step"], out["seconds"]) == ("2026-01-02", "extract", 1.5)


def test_on_start_and_on_step_follow_the_chain(tmp_path, caplog):
    cfg = RunConfig.model_validate(
        {
            "root": str(tmp_path),
            "source": {
                "kind": "generated",
                "generator": {"num_users": 20, "num_items": 10, "days": 4, "rows_per_day": 50, "windows_per_day": 1},
            },
            "split": {"valid_days": 1, "test_days": 1},
        }
    )
    seen = []
    with caplog.at_level(logging.INFO, logger="lfm4ads"):
        run_pipeline(
            cfg,
            ["ingest"],
            on_start=lambda n, chain: seen.append(("start", n, tuple(chain))),
            on_step=lambda n, s: seen.append(("done", n)),
        )
    assert seen == [("start", "ingest", ("ingest",)), ("done", "ingest")]
    done = [r for r in caplog.records if getattr(r, "event", None) == "done"]
    assert done and done[0].step == "ingest" and done[0].ds == "2026-01-04"
