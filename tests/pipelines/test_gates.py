from pipelines.gates import GateConfig, check_day


def health(rows=1000, cov=1.0, nan=0, norm=2.0, erank=8.0):
    return {
        "rows": rows,
        "log_rows": rows,
        "coverage_rows": cov,
        "columns": {"cr": {"nan_inf_rows": nan, "norm_mean": norm, "effective_rank": erank}},
    }


def test_healthy_day_passes():
    assert check_day("d", health(), health(), GateConfig()) == []
    assert check_day("d", health(), None, GateConfig()) == []


def test_each_breach_is_named():
    cfg = GateConfig()
    assert "coverage 0.5000" in check_day("d", health(cov=0.5), None, cfg)[0]
    assert "cr: 3 row(s) with NaN/inf" in check_day("d", health(nan=3), None, cfg)[0]
    assert "mean norm moved 150%" in check_day("d", health(norm=5.0), health(), cfg)[0]
    assert "effective rank fell 75%" in check_day("d", health(erank=2.0), health(), cfg)[0]
    assert "row count 100 vs 1000" in check_day("d", health(rows=100), health(), cfg)[0]


def test_disabled_gate_passes_anything():
    assert check_day("d", health(cov=0.0, nan=9), health(), GateConfig(enabled=False)) == []


def test_tiny_days_skip_day_over_day_checks():
    small = GateConfig(min_rows_for_drift=500)
    assert check_day("d", health(rows=100, norm=5.0), health(rows=100), small) == []
    assert check_day("d", health(rows=100, nan=1), health(rows=100), small) != []  # absolute checks still apply
