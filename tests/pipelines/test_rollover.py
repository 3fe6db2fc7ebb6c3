"""Model-version rollover: the Procrustes map against numpy/scipy references, and the
aligned publish on real Delta tables (delta-rs; no Ray/Spark). The study's fitting
options (``benchmarks/rollover_fits.py``) are tested here too: the maths keeps them."""

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from scipy.linalg import orthogonal_procrustes

from benchmarks.rollover_fits import StudyFit, publish_study
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
    assert m.applied_residual == pytest.approx(np.linalg.norm(new @ ref - old) / np.linalg.norm(old), rel=1e-9)
    assert m.residual <= m.applied_residual < 0.02
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
    assert (back.residual, back.applied_residual, back.n_fit) == (m.residual, m.applied_residual, 300)
    assert fit_procrustes(old, 3.0 * new, centre=True, scale=True).scale == pytest.approx(1 / 3)
    unscaled = fit_procrustes(old, 3.0 * new, centre=True)
    assert unscaled.applied_residual > 1.0 and unscaled.residual < 1e-9  # the gate's residual is scale-free
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
        w = (
            q[:d_new, :] @ np.linalg.qr(np.random.default_rng(200 + s).normal(size=(d_old, k)))[0].T
            if d_new >= d_old
            else None
        )
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
    for lost in ({"method": "least_squares"}, {"weight": "sample_count"}, {"fit_days": 3}, {"fit_space": "l2"}):
        with pytest.raises(ValidationError, match=next(iter(lost))):  # study options: benchmarks/rollover_fits.py
            RolloverConfig.model_validate(lost)


def test_scaled_fit_matches_the_svd_formula():
    """The product's fit (centred, scaled) against the formula written out with numpy:
    A^T B = U S V^T, W = U V^T, s = trace(S) / ||A||_F^2, means of each side."""
    rng = np.random.default_rng(17)
    new = rng.normal(size=(250, 7)) * 2.0 + 0.5
    old = new[:, :5] @ rng.normal(size=(5, 5)) + rng.normal(size=(250, 5)) - 1.0  # related, not a rotation
    m = fit_procrustes(old, new, centre=True, scale=True)
    a, b = new - new.mean(0), old - old.mean(0)
    u, sv, vt = np.linalg.svd(a.T @ b, full_matrices=False)
    np.testing.assert_allclose(m.w, u @ vt, atol=1e-10)
    assert m.scale == pytest.approx(sv.sum() / np.sum(a * a), rel=1e-10)
    np.testing.assert_allclose(m.apply(new), m.scale * a @ (u @ vt) + old.mean(0), atol=1e-10)
    assert m.applied_residual == pytest.approx(
        np.linalg.norm(m.scale * a @ (u @ vt) - b) / np.linalg.norm(b), rel=1e-10
    )


def test_overlap_window():
    assert in_overlap("2026-01-01", "2026-01-01", 0)
    assert in_overlap("2026-01-01", "2026-01-15", 14)
    assert not in_overlap("2026-01-01", "2026-01-16", 14)
    assert not in_overlap("2026-01-05", "2026-01-04", 14)


# --- publishing on Delta ------------------------------------------------------------------
def write_table(
    path: Path, name: str, ds: str, version: str, ids: list[str], vecs: np.ndarray, normalisation: str = "none"
) -> None:
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
    props = TableProperties(
        dim=dim,
        normalisation=normalisation,
        source_checkpoint=version,
        config_hash="h",
        tau_seconds=86400.0 if name.endswith("_cr") else None,
    )
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
    res = publish_aligned(
        root / "new", "user_ur", DS, "v2", "v1", RolloverConfig(min_shared_entities=100), old_tables_root=root / "old"
    )
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
    assert (
        publish_aligned(
            root / "new",
            "user_ur",
            DS,
            "v2",
            "v1",
            RolloverConfig(min_shared_entities=100),
            old_tables_root=root / "old",
        ).version
        is None
    )
    again = publish_aligned(
        root / "new",
        "user_ur",
        DS,
        "v2",
        "v1",
        RolloverConfig(min_shared_entities=100, force=True),
        old_tables_root=root / "old",
    )
    assert again.version is not None and again.version > res.version


def test_too_few_shared_entities_publishes_nothing(two_versions):
    root, *_ = two_versions
    with pytest.raises(RolloverError, match="only 300 entities.*min_shared_entities=1000"):
        publish_aligned(
            root / "new",
            "user_ur",
            DS,
            "v2",
            "v1",
            RolloverConfig(min_shared_entities=1000),
            old_tables_root=root / "old",
        )
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
    cfg = RolloverConfig(
        min_shared_entities=10,
        tables=["user_ur"],
        overlap_days=0,
        previous_model_version="v1",
        previous_tables_root=root / "old",
    )
    assert rollover_days(root / "new", ["2026-01-02", DS], "v1", cfg) == {}  # not a rollover
    assert (
        rollover_days(root / "new", ["2026-01-02"], "v2", cfg.model_copy(update={"previous_model_version": None})) == {}
    )
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


def test_l2_fit_space_matches_scipy_on_unit_rows():
    """fit_space='l2': W = scipy's Procrustes of the centred unit rows; scale and means from the raw rows."""
    rng = np.random.default_rng(21)
    new = rng.normal(size=(250, 6)) * rng.uniform(0.2, 5.0, size=(250, 1))  # norms spread 25x
    old = new @ rotation(6, 22) * 0.5 + 0.3 * rng.normal(size=new.shape) + 1.0
    m = fit_procrustes(old, new, centre=True, scale=True, fit_space="l2")
    un = new / np.linalg.norm(new, axis=1, keepdims=True)
    uo = old / np.linalg.norm(old, axis=1, keepdims=True)
    ref, _ = orthogonal_procrustes(un - un.mean(0), uo - uo.mean(0))
    np.testing.assert_allclose(m.w, ref, atol=1e-10)
    a, b = new - new.mean(0), old - old.mean(0)
    np.testing.assert_allclose(m.mean_new, new.mean(0), atol=1e-12)
    assert m.scale == pytest.approx(np.sum((a @ ref) * b) / np.sum(a * a), rel=1e-9)
    assert m.applied_residual == pytest.approx(np.linalg.norm(m.scale * a @ ref - b) / np.linalg.norm(b), rel=1e-9)
    raw = fit_procrustes(old, new, centre=True, scale=True)
    assert raw.residual <= m.residual + 1e-12  # raw is the least-squares optimum on raw rows
    with pytest.raises(ValueError, match="fit_space"):
        fit_procrustes(old, new, fit_space="cosine")


def test_pooled_fit_days_equals_the_fit_on_concatenated_rows(tmp_path):
    """fit_days=k: one fit on the same-day pairs of the k latest days, = fit_procrustes on the
    concatenated shared rows (intersected here with a plain dict, an independent reference)."""
    rng = np.random.default_rng(31)
    r = rotation(6, 32)
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    pairs = {}
    for k, d in enumerate(days):
        old_ids = [f"u{i}" for i in range(k * 40, k * 40 + 260)]  # entities drift day to day
        new_ids = [f"u{i}" for i in range(k * 40 + 30, k * 40 + 300)]  # partly other entities
        old = rng.normal(size=(260, 6)) + 0.5
        new_by_id = {e: v @ r + 0.3 * rng.normal(size=6) for e, v in zip(old_ids, old)}
        new = np.array([new_by_id.get(e, rng.normal(size=6)) for e in new_ids])
        write_table(tmp_path / "old" / "user_ur", "user_ur", d, "v1", old_ids, old)
        write_table(tmp_path / "new" / "user_ur", "user_ur", d, "v2", new_ids, new)
        o32, n32 = old.astype(np.float32), new.astype(np.float32)
        pos = {e: i for i, e in enumerate(new_ids)}
        shared = [(i, pos[e]) for i, e in enumerate(old_ids) if e in pos]
        pairs[d] = (o32[[i for i, _ in shared]], n32[[j for _, j in shared]])
    cfg = RolloverConfig(min_shared_entities=100, force=True)
    for k, fit_days in [(2, 2), (3, 9)]:  # 9 > days published: every day both hold
        res = publish_study(
            tmp_path / "new",
            "user_ur",
            days[-1],
            "v2",
            "v1",
            cfg,
            StudyFit(fit_days=fit_days),
            old_tables_root=tmp_path / "old",
        )
        use = days[-k:]
        ref = fit_procrustes(
            np.concatenate([pairs[d][0] for d in use]),
            np.concatenate([pairs[d][1] for d in use]),
            centre=True,
            scale=cfg.scale,
        )
        got = read_map(res.table, days[-1])
        np.testing.assert_allclose(got.w, ref.w, atol=1e-9)
        np.testing.assert_allclose(got.scale, ref.scale, atol=1e-9)
        np.testing.assert_allclose(got.mean_new, ref.mean_new, atol=1e-9)
        assert res.n_shared == got.n_fit == sum(len(pairs[d][0]) for d in use)
        meta = json.loads((res.table / ALIGN_DIR / f"ds={days[-1]}.json").read_text())
        assert sorted(d for d, _ in meta["fit_pairs"]) == use and all(a == b for a, b in meta["fit_pairs"])
    one = publish_aligned(
        tmp_path / "new",
        "user_ur",
        days[-1],
        "v2",
        "v1",
        RolloverConfig(min_shared_entities=100, force=True),
        old_tables_root=tmp_path / "old",
        out=tmp_path / "product",  # a fresh table: a table keeps the properties of its first publish
    )
    assert one.n_shared == len(pairs[days[-1]][0])  # the product: the latest same-day pair only
    # the study at its defaults is the product's publish: the same map, rows and properties
    study = publish_study(
        tmp_path / "new",
        "user_ur",
        days[-1],
        "v2",
        "v1",
        RolloverConfig(min_shared_entities=100, force=True),
        StudyFit(),
        old_tables_root=tmp_path / "old",
        out=tmp_path / "study",
    )
    np.testing.assert_array_equal(read_map(study.table, days[-1]).w, read_map(one.table, days[-1]).w)
    assert delta_io.read_days(study.table, [days[-1]]).equals(delta_io.read_days(one.table, [days[-1]]))
    assert delta_io.table_configuration(study.table) == delta_io.table_configuration(one.table)


def test_aligned_config_hash_is_the_one_published_before_the_study_options_left(two_versions):
    """The aligned table's config_hash still hashes the config's JSON as it was when
    RolloverConfig held the study options (pinned here), so republishing keeps it."""
    root, *_ = two_versions
    res = publish_aligned(
        root / "new", "user_ur", DS, "v2", "v1", RolloverConfig(min_shared_entities=100), old_tables_root=root / "old"
    )
    before = (
        '{"overlap_days":14,"min_shared_entities":100,"max_residual":0.75,"centre":true,"scale":true,'
        '"method":"procrustes","weight":"none","scale_fit":"least_squares","fit_days":1,"fit_space":"raw",'
        '"tables":["user_ur","item_ir","user_cr","item_cr"],"force":false,"previous_model_version":null,'
        '"previous_tables_root":null}'
    )
    new_hash = TableProperties.from_delta(delta_io.table_configuration(root / "new" / "user_ur")).config_hash
    want = hashlib.sha256(f"{new_hash}|v2|{before}".encode()).hexdigest()[:16]
    assert TableProperties.from_delta(delta_io.table_configuration(res.table)).config_hash == want


def test_norm_scale_keeps_the_old_spread():
    """scale_fit='norm': s = ||B||/||A|| (numpy reference), = the least-squares s / cosine."""
    rng = np.random.default_rng(41)
    new = rng.normal(size=(300, 5))
    old = new @ rotation(5, 42) * 2.0 + 1.5 * rng.normal(size=new.shape) + 3.0  # an imperfect fit
    m = fit_procrustes(old, new, centre=True, scale=True, scale_fit="norm")
    lsq = fit_procrustes(old, new, centre=True, scale=True)
    a, b = new - new.mean(0), old - old.mean(0)
    assert m.scale == pytest.approx(np.linalg.norm(b) / np.linalg.norm(a), rel=1e-12)
    np.testing.assert_allclose(m.w, lsq.w, atol=1e-12)  # the rotation does not depend on the scale
    cos = np.sum((a @ m.w) * b) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert lsq.scale == pytest.approx(m.scale * cos, rel=1e-9) and lsq.scale < m.scale
    spread = np.linalg.norm(m.apply(new) - old.mean(0))
    assert spread == pytest.approx(np.linalg.norm(b), rel=1e-9)
    assert lsq.applied_residual <= m.applied_residual  # least squares is the L2 optimum; norm keeps the spread
    assert lsq.residual == pytest.approx(m.residual, rel=1e-12)  # the gate's residual ignores the scale
    with pytest.raises(ValueError, match="scale_fit"):
        fit_procrustes(old, new, scale=True, scale_fit="max")
    assert StudyFit(scale_fit="norm").scale_fit == "norm"


@pytest.mark.parametrize("d_old,d_new", [(6, 6), (6, 9), (9, 6)])
def test_scale_free_residual_is_the_best_scalar_residual(d_old, d_new):
    """residual = min_c ||c A W - B|| / ||B|| (a dense grid over c as the reference), the
    same whatever scale the new vectors have or the map applies; with the least-squares
    scale and equal dims it is the applied residual."""
    rng = np.random.default_rng(21)
    old = rng.normal(size=(300, d_old))
    new = old @ rng.normal(size=(d_old, d_new)) * 0.3 + rng.normal(size=(300, d_new))  # related, not a rotation
    m = fit_procrustes(old, new, centre=True)
    a, b = new - new.mean(0), old - old.mean(0)
    grid = np.linspace(0.0, 5.0, 50001)
    aw = a @ m.w
    ref = np.sqrt(np.min(grid**2 * np.sum(aw * aw) - 2 * grid * np.sum(aw * b) + np.sum(b * b)) / np.sum(b * b))
    assert m.residual == pytest.approx(ref, abs=1e-6)
    assert 0.05 < m.residual < 0.99
    for factor in (0.1, 7.0):
        assert fit_procrustes(old, factor * new, centre=True).residual == pytest.approx(m.residual, rel=1e-9)
    for kw in ({"scale": True}, {"scale": True, "scale_fit": "norm"}):
        assert fit_procrustes(old, new, centre=True, **kw).residual == pytest.approx(m.residual, rel=1e-9)
    if d_old == d_new:
        lsq = fit_procrustes(old, new, centre=True, scale=True)
        assert lsq.applied_residual == pytest.approx(lsq.residual, rel=1e-9)
    assert fit_procrustes(old, -new, centre=True).residual == pytest.approx(m.residual, rel=1e-9)  # W absorbs a sign


def test_gate_accepts_a_rescaled_version_without_scale(tmp_path):
    """scale: false with new = 4 x rotated old: the scale-free residual is ~0, so the gate
    publishes (the applied residual, which the gate read before, is > 2.5); the aligned
    vectors keep the new version's (4x) spread."""
    rng = np.random.default_rng(23)
    ids = [f"i{k}" for k in range(120)]
    old = rng.normal(size=(120, 5)) + 1.0
    write_table(tmp_path / "item_ir", "item_ir", DS, "v1", ids, old)
    write_table(tmp_path / "item_ir__v2", "item_ir", DS, "v2", ids, 4.0 * (old - 1.0) @ rotation(5, 24))
    cfg = RolloverConfig(max_residual=0.1, min_shared_entities=10, scale=False)
    r = publish_aligned(tmp_path, "item_ir", DS, "v2", "v1", cfg)
    assert r.residual < 1e-6 and r.applied_residual > 2.5
    m = read_map(r.table, DS)
    assert m.scale == 1.0 and m.applied_residual == pytest.approx(r.applied_residual)
    snap = read_asof(r.table, DS, inclusive=True, expect_model_version="v1")
    vec = np.asarray(snap["vector"].combine_chunks().flatten()).reshape(-1, 5).astype(np.float64)
    np.testing.assert_allclose(vec - vec.mean(0), 4.0 * (old - old.mean(0)), atol=1e-4)
