"""The representation core (extract.vectors) against references written from the formulas:
plain Python loops over samples for the decay, per-row arithmetic for the normalisation,
element-by-element lists for the codec."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from extract import vectors as V

TAU = 3600.0


def _samples(seed: int, n: int = 300, d: int = 5, span: float = 20 * TAU):
    rng = np.random.default_rng(seed)
    keys = rng.choice(np.array(["a", "b", "c", "d", "e", "f"], dtype=object), n)
    t = 1_700_000_000 + np.round(rng.random(n) * span)
    t[10:14] = t[9]  # ties at one instant
    keys[10:14] = keys[9]
    x = rng.standard_normal((n, d)).astype(np.float32)
    return keys, t, x


def _loop_state(keys, t, x, e, cutoff, tau):
    """sum_k exp(-(cutoff - t_k)/tau) * x_k over entity e's samples strictly before cutoff."""
    s = [0.0] * x.shape[1]
    for k in range(len(t)):
        if keys[k] == e and t[k] < cutoff:
            w = math.exp(-(cutoff - t[k]) / tau)
            s = [a + w * float(b) for a, b in zip(s, x[k])]
    return np.array(s)


def test_decayed_snapshot_equals_the_loop():
    keys, t, x = _samples(0)
    cutoff = float(np.quantile(t, 0.8))  # later samples must not count
    ents, s, n, last = V.decayed_snapshot(keys, t, x, cutoff, TAU)
    before = t < cutoff
    assert list(ents) == sorted(set(keys[before]))
    for i, e in enumerate(ents):
        np.testing.assert_allclose(s[i], _loop_state(keys, t, x, e, cutoff, TAU), rtol=1e-12, atol=1e-12)
        assert n[i] == int(((keys == e) & before).sum())
        assert last[i] == t[(keys == e) & before].max()
    assert s.dtype == np.float64 and s.shape == (len(ents), x.shape[1])


def test_a_state_carried_by_decay_factor_equals_the_closed_form():
    keys, t, x = _samples(1)
    t1, t2 = float(np.quantile(t, 0.5)), float(t.max()) + 1
    ents1, s1, _, _ = V.decayed_snapshot(keys, t, x, t1, TAU)
    later = (t >= t1) & (t < t2)
    ents_d, s_d, _, _ = V.decayed_snapshot(keys[later], t[later], x[later], t2, TAU)
    ents2, s2, _, _ = V.decayed_snapshot(keys, t, x, t2, TAU)
    carried = {e: V.decay_factor(t2 - t1, TAU) * s1[i] for i, e in enumerate(ents1)}
    for i, e in enumerate(ents_d):
        carried[e] = carried.get(e, 0.0) + s_d[i]
    for i, e in enumerate(ents2):
        np.testing.assert_allclose(carried[e], s2[i], rtol=1e-10, atol=1e-12)
    assert V.decay_factor(TAU, TAU) == pytest.approx(math.exp(-1))


def test_weighted_segment_sum_and_group_max_equal_loops():
    rng = np.random.default_rng(2)
    n, d, k = 500, 3, 7
    codes = rng.integers(0, k - 1, n)  # the last group stays empty
    x = rng.standard_normal((n, d)).astype(np.float32)
    t = rng.integers(0, 10**9, n)
    w = V.decay_weights(t / 1e3, 1e6, TAU)
    ref = np.zeros((k, d))
    for i in range(n):
        ref[codes[i]] += math.exp((t[i] / 1e3 - 1e6) / TAU) * x[i].astype(np.float64)
    np.testing.assert_allclose(V.segment_sum(codes, x, k, w), ref, rtol=1e-12, atol=1e-300)
    got = V.group_max(codes, t, k)
    assert got.dtype == np.int64 and got[-1] == np.iinfo(np.int64).min
    assert all(got[c] == max(t[i] for i in range(n) if codes[i] == c) for c in range(k - 1))
    assert V.group_max(codes, t.astype(float), k)[-1] == -np.inf


def test_point_in_time_states_equal_the_loop_with_ties_and_a_fold_mask():
    keys, t, x = _samples(3, n=120)
    keep = np.random.default_rng(4).random(len(t)) < 0.6
    got = V.point_in_time_states(keys, t, x.astype(np.float64), TAU, keep)
    plain = V.point_in_time_states(keys, t, x.astype(np.float64), TAU)
    for k in range(len(t)):
        ref = np.zeros(x.shape[1])
        ref_all = np.zeros(x.shape[1])
        for j in range(len(t)):
            if keys[j] == keys[k] and t[j] < t[k]:  # strictly before: a tie never sees its twin
                w = math.exp(-(t[k] - t[j]) / TAU)
                ref_all += w * x[j].astype(np.float64)
                if keep[j]:
                    ref += w * x[j].astype(np.float64)
        np.testing.assert_allclose(got[k], ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(plain[k], ref_all, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got[10:14], np.repeat(got[9:10], 4, axis=0))  # tied rows: one state
    with pytest.raises(ValueError, match="tau"):
        V.point_in_time_states(np.array(["a", "a"], object), np.array([0.0, 701 * TAU]), np.ones((2, 1)), TAU)


def test_normalise_equals_per_row_arithmetic():
    rng = np.random.default_rng(5)
    s = rng.standard_normal((6, 4)) * 3
    s[2] = 0.0
    s[3] = 1e-14  # below the l2 floor
    l2, ln = V.normalise(s, "l2"), V.normalise(s, "layernorm")
    for row, a, b in zip(s, l2, ln):
        norm = math.sqrt(sum(v * v for v in row))
        np.testing.assert_allclose(a, [v / max(norm, 1e-12) for v in row], rtol=1e-12, atol=0)
        mean = sum(row) / len(row)
        var = sum((v - mean) ** 2 for v in row) / len(row)
        np.testing.assert_allclose(b, [(v - mean) / math.sqrt(var + 1e-5) for v in row], rtol=1e-12, atol=1e-300)
    assert V.normalise(s, "none") is s
    with pytest.raises(ValueError, match="normalisation"):
        V.normalise(s, "l1")


def test_normalise_is_bit_for_bit_what_each_caller_computed_before():
    """The refactor changes no published number: the rollover's and the probe's former
    formulas (np.linalg.norm / np.var; x / |x| with zero rows kept zero) give equal bits."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 8)) * rng.random((50, 1)) * 10
    x[0] = 0.0
    n = np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(V.normalise(x, "l2"), x / np.maximum(n, V.L2_EPS))
    mean = x.mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(
        V.normalise(x, "layernorm"), (x - mean) / np.sqrt(x.var(axis=1, keepdims=True) + V.LN_EPS)
    )
    from extract.probe import UNIT_EPS

    unit = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    np.testing.assert_array_equal(V.normalise(x, "l2", l2_eps=UNIT_EPS), unit)


def test_codec_round_trips_and_refuses_ragged_columns():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    fixed = V.to_arrow(x)
    assert fixed.type == pa.list_(pa.float32(), 3) and fixed.to_pylist() == x.tolist()
    plain = V.to_arrow(x, np.float64, fixed=False)
    assert plain.type == pa.list_(pa.float64()) and plain.to_pylist() == x.tolist()
    for col in (
        fixed,
        plain,
        pa.chunked_array([fixed[:1], fixed[1:]]),
        pa.array(x.tolist(), pa.large_list(pa.float32())),
    ):
        got = V.to_numpy(col)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(V.to_numpy(fixed.slice(1, 2), 3, np.float64), x[1:3].astype(np.float64))
    np.testing.assert_array_equal(V.to_numpy(plain.slice(2), 3), x[2:])
    assert V.to_numpy(pa.array([], pa.list_(pa.float32(), 3))).shape == (0, 3)
    assert V.to_numpy(pa.array([], pa.list_(pa.float32()))).shape == (0, 0)
    assert V.to_numpy(pa.chunked_array([], pa.list_(pa.float32())), 5).shape == (0, 5)
    ragged = pa.array([[1.0, 2.0, 3.0], [1.0], None, [1.0, 2.0, 3.0]], pa.list_(pa.float32()))
    assert V.bad_rows(ragged, 3).tolist() == [False, True, True, False]
    assert V.bad_rows(fixed, 3).tolist() == [False] * 4 and V.bad_rows(fixed, 2).all()
    with pytest.raises(ValueError, match="expected 2 x 3"):
        V.to_numpy(pa.array([[1.0, 2.0, 3.0], [1.0]], pa.list_(pa.float32())), 3)
    fs = V.fixed_size(plain, 3)
    assert fs.type == pa.list_(pa.float32(), 3) and fs.to_pylist() == x.tolist()
    assert V.fixed_size(fixed, 3) is fixed


def test_codec_torch_round_trip():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    t = V.to_torch(V.to_arrow(x))
    assert t.dtype == torch.float32 and t.shape == (5, 4)
    back = V.from_torch(t.to(torch.float64).requires_grad_())
    assert back.dtype == np.float32
    np.testing.assert_array_equal(V.to_numpy(V.to_arrow(back)), x)


def test_tau_is_declared_once():
    from extract import AggregateConfig, ProbeConfig

    assert V.TAU_SECONDS == 7 * 86400.0
    assert AggregateConfig().tau_seconds == ProbeConfig().tau_seconds == V.TAU_SECONDS
