"""Model-version rollover: the Procrustes map against numpy/scipy references, and the
aligned publish on real Delta tables (delta-rs; no Ray/Spark)."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from scipy.linalg import orthogonal_procrustes

from contracts import TableProperties
from engines import delta_io
from extract import publish, read_asof
from pipelines.rollover import (
    ALIGN_DIR,
    AlignMap,
    RolloverConfig,
    RolloverError,
    aligned_table_name,
    fit_procrustes,
    in_overlap,
    publish_aligned,
    read_map,
    rollover_day,
    rollover_days,
)

DS = "2026-01-03"


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --- the map ---------------------------------------------------------------------------
def test_recovers_a_planted_rotation():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(400, 16))
    r = rotation(16, 1)
    new = old @ r + 0.01 * rng.normal(size=old.shape)
    m = fit_procrustes(old, new, centre=False)
    ref, _ = orthogonal_procrustes(new, old)  # scipy: argmin ||new R - old||
    np.testing.assert_allclose(m.w, ref, atol=1e-10)
    np.testing.assert_allclose(m.w, r.T, atol=5e-3)  # new @ r.T = old
    np.testing.assert_allclose(m.w.T @ m.w, np.eye(16), atol=1e-10)
    assert m.residual == pytest.approx(np.linalg.norm(new @ ref - old) / np.linalg.norm(old), rel=1e-9)
    assert m.residual < 0.02
    np.testing.assert_allclose(m.apply(new), old, atol=0.06)


def test_centring_recovers_an_offset_and_round_trips_json():
    rng = np.random.default_rng(2)
    old = rng.normal(size=(300, 8)) + 5.0
    new = (old - 5.0) @ rotation(8, 3) - 2.0
    m = fit_procrustes(old, new, centre=True)
    np.testing.assert_allclose(m.mean_new, new.mean(0))
    np.testing.assert_allclose(m.apply(new), old, atol=1e-9)
    assert m.residual < 1e-9
    back = AlignMap.from_json(m.to_json())
    np.testing.assert_allclose(back.apply(new), m.apply(new))
    assert (back.residual, back.n_fit) == (m.residual, 300)
    assert fit_procrustes(old, 3.0 * new, centre=True, scale=True).scale == pytest.approx(1 / 3)
    assert fit_procrustes(old, 3.0 * new, centre=True).residual > 1.0
    # uncentred, the offset cannot be rotated away
    assert fit_procrustes(old, new, centre=False).residual > 0.1


@pytest.mark.parametrize("d_old,d_new", [(8, 12), (12, 8)])
def test_dims_differ_semi_orthogonal(d_old, d_new):
    rng = np.random.default_rng(4)
    k = min(d_old, d_new)
    z = rng.normal(size=(500, k))  # the shared content, embedded isometrically in each space
    old = z @ np.linalg.qr(rng.normal(size=(d_old, k)))[0].T
    new = z @ np.linalg.qr(rng.normal(size=(d_new, k)))[0].T + 1e-3 * rng.normal(size=(500, d_new))
    m = fit_procrustes(old, new, centre=False)
    assert m.w.shape == (d_new, d_old)
    small = m.w.T @ m.w if d_new >= d_old else m.w @ m.w.T
    np.testing.assert_allclose(small, np.eye(k), atol=1e-10)
    assert m.residual < 0.01
    np.testing.assert_allclose(m.apply(new), old, atol=0.01)
    # brute-force check of optimality: no random semi-orthogonal map does better
    for s in range(20):
        q = np.linalg.qr(np.random.default_rng(100 + s).normal(size=(max(d_new, d_old), k)))[0]
        w = q[:d_new, :] @ np.linalg.qr(np.random.default_rng(200 + s).normal(size=(d_old, k)))[0].T \
            if d_new >= d_old else None
        if w is None:
            w = np.linalg.qr(np.random.default_rng(300 + s).normal(size=(d_old, d_new)))[0].T
        assert np.linalg.norm(new @ w - old) >= np.linalg.norm(new @ m.w - old) - 1e-9


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="same N"):
        fit_procrustes(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        fit_procrustes(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="expected"):
        fit_procrustes(np.eye(3), np.eye(3)).apply(np.zeros((2, 4)))


def test_config_is_strict():
    with pytest.raises(ValidationError, match="max_residul"):
        RolloverConfig.model_validate({"max_residul": 0.1})
    with pytest.raises(ValidationError, match="unknown table"):
        RolloverConfig(tables=["user_ur", "bogus"])


def test_overlap_window():
    assert in_overlap("2026-01-01", "2026-01-01", 0)
    assert in_overlap("2026-01-01", "2026-01-15", 14)
    assert not in_overlap("2026-01-01", "2026-01-16", 14)
    assert not in_overlap("2026-01-05", "2026-01-04", 14)


# --- publishing on Delta ------------------------------------------------------------------
def write_table(path: Path, name: str, ds: str, version: str, ids: list[str], vecs: np.ndarray,
                normalisation: str = "none") -> None:
    n, dim = vecs.shape
    cols = {
        "entity_id": pa.array(ids, pa.string()),
        "ds": pa.array([ds] * n, pa.string()),
        "model_version": pa.array([version] * n, pa.string()),
        "layer": pa.array(["top"] * n, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), dim),
        "updated_at": pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "sample_count": pa.array(np.ones(n, np.int64)),
    }
    if name.endswith("_cr"):
        cols["decayed_sum"] = cols["vector"]
    props = TableProperties(dim=dim, normalisation=normalisation, source_checkpoint=version, config_hash="h",
                            tau_seconds=86400.0 if name.endswith("_cr") else None)
    publish(path, name, ds, pa.table(cols), props)


@pytest.fixture
def two_versions(tmp_path):
    """Old v1 in ``old/<name>``; new v2 = v1 @ R + noise (+ 20 new-only entities) in ``new/<name>``."""
    rng = np.random.default_rng(7)
    old = rng.normal(size=(300, 8)) + 1.0
    r = rotation(8, 8)
    new_only = rng.normal(size=(20, 8))
    ids = [f"u{i}" for i in range(300)]
    write_table(tmp_path / "old" / "user_ur", "user_ur", "2026-01-02", "v1", ids, old)
    new = np.vstack([old @ r + 0.01 * rng.normal(size=old.shape), new_only])
    new_ids = ids + [f"fresh{i}" for i in range(20)]
    write_table(tmp_path / "new" / "user_ur", "user_ur", "2026-01-02", "v2", new_ids, new)
    write_table(tmp_path / "new" / "user_ur", "user_ur", DS, "v2", new_ids, new * 1.0)
    return tmp_path, old, new, r


def test_aligned_table_is_read_with_the_old_model_version(two_versions):
    root, old, new, r = two_versions
    res = publish_aligned(root / "new", "user_ur", DS, "v2", "v1", RolloverConfig(min_shared_entities=100),
                          old_tables_root=root / "old")
    out = root / "new" / aligned_table_name("user_ur", "v1")
    assert res.table == out and res.n_shared == 300 and res.rows == 320
    assert (res.fit_ds_old, res.fit_ds_new) == ("2026-01-02", "2026-01-02")  # same-day pairs
    snap = read_asof(out, "2026-01-04", expect_model_version="v1", expect_dim=8)
    assert snap["ds"][0].as_py() == DS and snap.num_rows == 320
    got = np.asarray(snap["vector"].combine_chunks().flatten()).reshape(-1, 8)
    order = {e: i for i, e in enumerate(snap["entity_id"].to_pylist())}
    idx = [order[f"u{i}"] for i in range(300)]
    np.testing.assert_allclose(got[idx], old, atol=0.06)  # back in v1's space
    m = read_map(out, DS)
    np.testing.assert_allclose(m.w, r.T, atol=5e-3)
    np.testing.assert_allclose(got[[order[f"fresh{i}"] for i in range(20)]], m.apply(new[300:]), atol=1e-5)
    props = TableProperties.from_delta(delta_io.table_configuration(out))
    assert (props.source_checkpoint, props.dim) == ("v1", 8)
    # the raw new table still refuses an old consumer: the break is loud, not silent
    with pytest.raises(ValueError, match="expects 'v1'"):
        read_asof(root / "new" / "user_ur", "2026-01-04", expect_model_version="v1")
    # rerun: a no-op; force: republished
    assert publish_aligned(root / "new", "user_ur", DS, "v2", "v1", RolloverConfig(min_shared_entities=100),
                           old_tables_root=root / "old").version is None
    again = publish_aligned(root / "new", "user_ur", DS, "v2", "v1",
                            RolloverConfig(min_shared_entities=100, force=True), old_tables_root=root / "old")
    assert again.version is not None and again.version > res.version


def test_too_few_shared_entities_publishes_nothing(two_versions):
    root, *_ = two_versions
    with pytest.raises(RolloverError, match="only 300 entities.*min_shared_entities=1000"):
        publish_aligned(root / "new", "user_ur", DS, "v2", "v1", RolloverConfig(min_shared_entities=1000),
                        old_tables_root=root / "old")
    assert not (root / "new" / aligned_table_name("user_ur", "v1")).exists()


def test_residual_above_bound_publishes_nothing(tmp_path):
    rng = np.random.default_rng(9)
    ids = [f"i{k}" for k in range(200)]
    write_table(tmp_path / "item_ir", "item_ir", DS, "v1", ids, rng.normal(size=(200, 6)))
    write_table(tmp_path / "item_ir__v2", "item_ir", DS, "v2", ids, rng.normal(size=(200, 6)))  # unrelated
    with pytest.raises(RolloverError, match="residual 0\\.9[0-9]+ of v2 onto v1 is above max_residual=0.3"):
        publish_aligned(tmp_path, "item_ir", DS, "v2", "v1", RolloverConfig(max_residual=0.3, min_shared_entities=10))
    out = tmp_path / aligned_table_name("item_ir", "v1")
    assert not out.exists() and not delta_io.exists(out)


def test_cr_table_with_l2_normalisation_and_rollover_day(tmp_path):
    rng = np.random.default_rng(11)
    ids = [f"u{k}" for k in range(150)]
    old = rng.normal(size=(150, 4))
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    write_table(tmp_path / "user_cr", "user_cr", DS, "v1", ids, old, normalisation="l2")
    write_table(tmp_path / "user_cr__v2", "user_cr", DS, "v2", ids, old @ rotation(4, 12), normalisation="l2")
    cfg = RolloverConfig(tables=["user_cr"], min_shared_entities=10, overlap_days=2)
    assert rollover_day(tmp_path, "2026-01-09", "v2", "v1", "2026-01-03", cfg) == {}  # overlap over
    out = rollover_day(tmp_path, DS, "v2", "v1", "2026-01-03", cfg)
    assert out["user_cr"]["residual"] < 1e-5
    snap = read_asof(tmp_path / "user_cr__aligned_v1", DS, inclusive=True, expect_model_version="v1")
    vec = np.asarray(snap["vector"].combine_chunks().flatten()).reshape(-1, 4)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "user_cr__aligned_v1" / ALIGN_DIR / f"ds={DS}.json").is_file()


def test_missing_versions_and_snapshots_are_clear_errors(two_versions):
    root, *_ = two_versions
    cfg = RolloverConfig(min_shared_entities=10)
    with pytest.raises(RolloverError, match="no user_ur table of model version 'v9'"):
        publish_aligned(root / "new", "user_ur", DS, "v9", "v1", cfg, old_tables_root=root / "old")
    with pytest.raises(RolloverError, match="no ds=2026-02-01 snapshot"):
        publish_aligned(root / "new", "user_ur", "2026-02-01", "v2", "v1", cfg, old_tables_root=root / "old")
    with pytest.raises(RolloverError, match="unknown table"):
        publish_aligned(root / "new", "users", DS, "v2", "v1", cfg)
    with pytest.raises(RolloverError, match="both 'v1'"):
        publish_aligned(root / "new", "user_ur", DS, "v1", "v1", cfg)
    with pytest.raises(RolloverError, match="no snapshot at or before 2026-01-01"):
        write_table(root / "new" / "user_ur", "user_ur", "2026-01-01", "v2", ["u0", "u1"], np.eye(2, 8))
        publish_aligned(root / "new", "user_ur", "2026-01-01", "v2", "v1", cfg, old_tables_root=root / "old")


def test_rollover_days_is_the_pipeline_entry(two_versions):
    root, old, *_ = two_versions
    cfg = RolloverConfig(min_shared_entities=10, tables=["user_ur"], overlap_days=0,
                         previous_model_version="v1", previous_tables_root=root / "old")
    assert rollover_days(root / "new", ["2026-01-02", DS], "v1", cfg) == {}  # not a rollover
    assert rollover_days(root / "new", ["2026-01-02"], "v2", cfg.model_copy(update={"previous_model_version": None})) == {}
    out = rollover_days(root / "new", [DS, "2026-01-02"], "v2", cfg)
    assert list(out) == ["2026-01-02"]  # overlap_days=0: only the new version's first day
    assert out["2026-01-02"]["user_ur"]["residual"] < 0.02


def test_least_squares_option_matches_numpy_lstsq():
    rng = np.random.default_rng(13)
    old = rng.normal(size=(200, 6))
    new = old @ rng.normal(size=(6, 9)) + 0.05 * rng.normal(size=(200, 9))  # not a rotation
    m = fit_procrustes(old, new, centre=True, method="least_squares")
    a, b = new - new.mean(0), old - old.mean(0)
    np.testing.assert_allclose(m.w, np.linalg.lstsq(a, b, rcond=None)[0], atol=1e-10)
    assert m.residual < fit_procrustes(old, new, centre=True, scale=True).residual
    with pytest.raises(ValueError, match="method"):
        fit_procrustes(old, new, method="cca")


def test_weighted_fit_equals_the_fit_on_repeated_rows():
    """Integer weights = each row repeated that many times (an independent reference)."""
    from pipelines.rollover import fit_procrustes

    rng = np.random.default_rng(3)
    new = rng.normal(size=(60, 5))
    old = new @ np.linalg.qr(rng.normal(size=(5, 4)))[0][:, :4] * 1.7 + rng.normal(scale=0.5, size=(60, 4)) + 2.0
    w = rng.integers(1, 6, size=60)
    fit = fit_procrustes(old, new, centre=True, scale=True, weights=w)
    ref = fit_procrustes(np.repeat(old, w, axis=0), np.repeat(new, w, axis=0), centre=True, scale=True)
    np.testing.assert_allclose(fit.w, ref.w, atol=1e-10)
    np.testing.assert_allclose(fit.scale, ref.scale, atol=1e-10)
    np.testing.assert_allclose(fit.apply(new), ref.apply(new), atol=1e-9)
    uniform = fit_procrustes(old, new, centre=True, scale=True, weights=np.ones(60))
    plain = fit_procrustes(old, new, centre=True, scale=True)
    np.testing.assert_allclose(uniform.w, plain.w, atol=1e-12)
    assert uniform.residual == pytest.approx(plain.residual)
    with pytest.raises(ValueError, match="weights"):
        fit_procrustes(old, new, weights=np.zeros(60))
