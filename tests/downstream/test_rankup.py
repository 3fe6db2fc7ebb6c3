"""RankUp / RankMixer building blocks against explicit references."""

import numpy as np
import pytest
import torch

from downstream.rankup import MixerBlock, PerTokenFFN, RankUpConfig, TokenMixerRanker, Tokenizer, token_mix


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
    [RankUpConfig(), RankUpConfig.rankmixer(), RankUpConfig(global_token="fm", num_embeddings=3, crossed_token=False)],
)
def test_ranker_shapes_and_recorded_states(cfg):
    vocab = {"user_id": 10, "age": 4, "item_id": 12}
    m = TokenMixerRanker(cfg, vocab, 2, user_columns=["user_id", "age"], item_columns=["item_id"],
                         seq_field="item_id", rep_dims={"user_ur": 5, "item_ir": 5})
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
        TokenMixerRanker(RankUpConfig(), {"user_id": 3, "item_id": 3}, 1, user_columns=["user_id"],
                         item_columns=["item_id"], seq_field=None, rep_dims={})
    with pytest.raises(ValueError, match="leaves no feature token"):
        TokenMixerRanker(RankUpConfig(num_tokens=4, d_model=8), {"user_id": 3, "item_id": 3}, 3,
                         user_columns=["user_id"], item_columns=["item_id"], seq_field=None,
                         rep_dims={"user_ur": 2, "item_ir": 2})
