"""RankUp / RankMixer building blocks against explicit references."""

import numpy as np
import pytest
import torch

from downstream.rankup import RankUpConfig, TokenMixerRanker
from downstream.rankup_blocks import MixerBlock, PerTokenFFN, Tokenizer, token_mix


def test_token_mix_matches_loop_reference():
    B, T, D = 3, 4, 8
    x = torch.randn(B, T, D)
    out = token_mix(x).numpy()
    ref = np.zeros((B, T, D), np.float32)
    d = D // T
    for b in range(B):
        for h in range(T):  # new token h = head h of every token, in token order
            ref[b, h] = np.concatenate([x[b, t, h * d : (h + 1) * d].numpy() for t in range(T)])
    np.testing.assert_array_equal(out, ref)
    # the reshape/transpose reference of papers.md
    np.testing.assert_array_equal(out, x.reshape(B, T, T, D // T).transpose(1, 2).reshape(B, T, D).numpy())


def test_per_token_ffn_uses_each_tokens_own_weights():
    torch.manual_seed(0)
    T, D = 3, 4
    for kind in ("gelu", "swiglu"):
        ffn = PerTokenFFN(T, D, 2, kind)
        x = torch.randn(5, T, D)
        out = ffn(x).detach().numpy()
        for t in range(T):
            h = x[:, t] @ ffn.w1[t] + ffn.b1[t]
            h = torch.nn.functional.gelu(h) if kind == "gelu" else torch.nn.functional.silu(h) * (x[:, t] @ ffn.w3[t])
            np.testing.assert_allclose(out[:, t], (h @ ffn.w2[t] + ffn.b2[t]).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_block_kinds_follow_post_and_pre_ln():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 8)
    post = MixerBlock(4, 8, 2, "rankmixer")
    s = post.ln1(token_mix(x) + x)
    torch.testing.assert_close(post(x), post.ln2(post.ffn(s) + s))
    pre = MixerBlock(4, 8, 2, "rankup")
    h = token_mix(pre.ln1(x)) + x
    torch.testing.assert_close(pre(x), pre.ffn(pre.ln2(h)) + h)


def test_tokenizer_permutation_is_seeded_and_saved():
    a = Tokenizer(F=5, De=4, K=2, T_f=4, D=8, permute=True, seed=3)
    b = Tokenizer(F=5, De=4, K=2, T_f=4, D=8, permute=True, seed=3)
    assert torch.equal(a.perm, b.perm) and "perm" in a.state_dict()
    assert sorted(a.perm[0].tolist()) == list(range(5))
    sem = Tokenizer(F=5, De=4, K=1, T_f=3, D=8, permute=False, seed=3)
    assert sem.perm[0].tolist() == list(range(5))
    # 5 fields x 4 = 20 values cut in 3 chunks of 7 (one zero-padded)
    emb = torch.randn(2, 1, 5, 4)
    out = sem(emb)
    flat = torch.nn.functional.pad(emb.reshape(2, 20), (0, 1)).view(2, 3, 7)
    ref = torch.stack([flat[:, t] @ sem.proj[0][t] for t in range(3)], 1) + sem.bias
    torch.testing.assert_close(out, ref)


def _batch(B=6):
    g = torch.Generator().manual_seed(0)
    return {
        "user_id": torch.randint(0, 10, (B,), generator=g),
        "age": torch.randint(0, 4, (B,), generator=g),
        "item_id": torch.randint(0, 12, (B,), generator=g),
        "hist_seq": torch.randint(0, 12, (B, 3), generator=g),
        "hist_mask": torch.ones(B, 3, dtype=torch.bool),
        "rep:user_ur": torch.randn(B, 5, generator=g),
        "rep:item_ir": torch.randn(B, 5, generator=g),
        "present:user_ur": torch.tensor([True, False] * (B // 2)),
        "present:item_ir": torch.ones(B, dtype=torch.bool),
    }


@pytest.mark.parametrize(
    "cfg",
    [
        RankUpConfig(),
        RankUpConfig(crossed_token=True),
        RankUpConfig.rankmixer(),
        RankUpConfig(global_token="fm", num_embeddings=3),
    ],
)
def test_ranker_shapes_and_recorded_states(cfg):
    vocab = {"user_id": 10, "age": 4, "item_id": 12}
    m = TokenMixerRanker(
        cfg,
        vocab,
        2,
        user_columns=["user_id", "age"],
        item_columns=["item_id"],
        seq_field="item_id",
        rep_dims={"user_ur": 5, "item_ir": 5},
    )
    m.record_states = True
    out = m(_batch())
    assert out.shape == (6, 2)
    names = [n for n, _ in m.states]
    assert names == ["tokenizer", "L1.mixer", "L1.ffn", "L2.mixer", "L2.ffn"]
    assert all(s.shape == (6, cfg.num_tokens, cfg.d_model) for _, s in m.states)
    out.sum().backward()


def test_bad_configs_are_clear():
    with pytest.raises(ValueError, match="divisible by num_tokens"):
        RankUpConfig(d_model=60, num_tokens=8)
    with pytest.raises(ValueError, match="crossed token needs tables"):
        TokenMixerRanker(
            RankUpConfig(crossed_token=True),
            {"user_id": 3, "item_id": 3},
            1,
            user_columns=["user_id"],
            item_columns=["item_id"],
            seq_field=None,
            rep_dims={},
        )
    with pytest.raises(ValueError, match="leaves no feature token"):
        TokenMixerRanker(
            RankUpConfig(num_tokens=4, d_model=8, crossed_token=True),
            {"user_id": 3, "item_id": 3},
            3,
            user_columns=["user_id"],
            item_columns=["item_id"],
            seq_field=None,
            rep_dims={"user_ur": 2, "item_ir": 2},
        )


def _np(t):
    return t.detach().double().numpy()


@pytest.mark.parametrize("kind", ["mlp", "fm", "fwfm", "dcnv2"])
@pytest.mark.parametrize("sfg", [False, True])
def test_global_token_matches_loop_reference(kind, sfg):
    """g = P(f(E)) from papers.md section 2 (MLP, FM, FwFM, DCNv2), with SFG's generated side
    (papers.md section 5) where it applies; written as plain loops over field pairs."""
    from downstream.rankup_blocks import GlobalToken

    if sfg and kind == "mlp":
        return
    torch.manual_seed(0)
    n, De, D = 4, 3, 5
    g = GlobalToken(kind, n, De, D, cross_layers=2, sfg=sfg, gamma=0.7)
    if kind == "fwfm":
        with torch.no_grad():
            g.r.copy_(torch.randn(n, n))
    E = torch.randn(2, n, De)
    out = _np(g(E))
    for b in range(2):
        e = _np(E[b])
        if sfg:
            w, bias = _np(g.gen.lin.weight), _np(g.gen.lin.bias)
            gen = (np.maximum(w @ e.reshape(-1) + bias, 0) * 0.7).reshape(n, De)
        else:
            gen = e
        if kind == "mlp":
            z = _np(g.f[2].weight) @ np.maximum(_np(g.f[0].weight) @ e.mean(0) + _np(g.f[0].bias), 0) + _np(g.f[2].bias)
            np.testing.assert_allclose(out[b], z, rtol=1e-5, atol=1e-6)
            continue
        if kind == "dcnv2":
            x0, side = e.reshape(-1), gen.reshape(-1)
            x = x0.copy()
            for lin in g.cross:
                x = x + side * (_np(lin.weight) @ x + _np(lin.bias))
            pooled = x
        else:
            r = _np(g.r) if kind == "fwfm" else np.ones((n, n))
            pooled = np.zeros(De)
            for i in range(n):
                for j in range(i + 1, n):
                    pooled += r[i, j] * (e[i] * gen[j] + gen[i] * e[j]) / 2
        np.testing.assert_allclose(out[b], _np(g.f.weight) @ pooled + _np(g.f.bias), rtol=1e-5, atol=1e-6)


def test_global_sfg_needs_an_interaction():
    with pytest.raises(ValueError, match="global_sfg needs"):
        RankUpConfig(global_token="mlp", global_sfg=True)


def _ranker(cfg, tasks=2):
    vocab = {"user_id": 10, "age": 4, "item_id": 12}
    return TokenMixerRanker(
        cfg,
        vocab,
        tasks,
        user_columns=["user_id", "age"],
        item_columns=["item_id"],
        seq_field="item_id",
        rep_dims={"user_ur": 5, "item_ir": 5},
    )


def test_head_k_reads_task_token_k():
    """Task tokens sit in slots 0..M-1 of the input; y_k = Tower_k([x_L[:, k], mean_t x_L[:, t]]):
    perturbing final task token k (pool held fixed) moves head k only, and each head equals a
    numpy evaluation of its own tower."""
    torch.manual_seed(0)
    m = _ranker(RankUpConfig(), tasks=3).eval()
    b = _batch()
    toks = m.tokens(b)
    torch.testing.assert_close(toks[:, :3], m.task_tok.expand(6, -1, -1))
    x = m.encode(b)
    torch.testing.assert_close(m(b), m.head_logits(x))
    task, pooled = x[:, :3], x.mean(1)
    base = m.task_heads(task, pooled)
    for k in range(3):
        t2 = task.clone()
        t2[:, k] += torch.randn(6, m.cfg.d_model)
        moved = (m.task_heads(t2, pooled) - base).abs().amax(0)
        assert moved[k] > 1e-4 and all(moved[j] == 0 for j in range(3) if j != k)
    for k, tower in enumerate(m.towers):
        inp = np.concatenate([_np(task[:, k]), _np(pooled)], 1)
        h = np.maximum(inp @ _np(tower[0].weight).T + _np(tower[0].bias), 0)
        np.testing.assert_allclose(
            _np(base[:, k]), h @ _np(tower[2].weight)[0] + _np(tower[2].bias)[0], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("kind", ["fwfm", "dcnv2"])
def test_ranker_runs_with_new_global_tokens(kind):
    m = _ranker(RankUpConfig(global_token=kind, global_sfg=True))
    out = m(_batch())
    assert out.shape == (6, 2) and torch.isfinite(out).all()
    out.sum().backward()


def test_defaults_study_runs_on_a_run_root(tmp_path, capsys):
    """``python -m studies rankup-defaults``: the validation-picked defaults study, on a tiny run root."""
    import json

    from studies.rankup_defaults import study
    from tests.downstream.synth import make_run

    make_run(tmp_path, rows_per_day=300)
    res = study(
        tmp_path,
        "2026-01-04",
        "2026-01-05",
        seeds=1,
        epochs=1,
        erank_rows=64,
        variants=['crossed={"crossed_token": true, "lr": 0.001}'],
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"rankmixer", "rankup", "crossed"} == set(res)
    for r in last.values():
        assert 0.0 <= r["valid"] <= 1.0 and 1.0 <= r["erank"] <= 8.0
    assert last["crossed"]["params"] > last["rankup"]["params"]
