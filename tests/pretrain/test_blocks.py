"""NLIR, the TokenFormer layer, SFG cross layers and the target-token path against numpy
references written from the formulas in papers.md (weights copied out of the modules; the
references never call the modules' sub-layers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain import FeatureEncoder, FoundationModel, ModelConfig
from pretrain.mix_tower import CrossLayer, FieldGenerator
from pretrain.tokenformer import NLIR, TokenFormerLayer, bfts_mask
from tests.pretrain.toy import SPEC, toy_table


def W(lin: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


def silu(x):
    return x / (1 + np.exp(-x))


def gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def layer_norm(x, ln: torch.nn.LayerNorm):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.weight.detach().double().numpy() + ln.bias.detach().double().numpy()


@pytest.mark.parametrize("phi,fn", [("silu", silu), ("sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("gelu", gelu)])
def test_nlir_is_one_sided_multiplicative(phi, fn):
    """update(x) = (W_a x + b_a) * phi(W_b x + b_b), phi on one operand, no output projection."""
    torch.manual_seed(0)
    m = NLIR(6, phi)
    x = torch.randn(4, 3, 6)
    (wa, ba), (wb, bb) = W(m.a), W(m.b)
    xn = x.double().numpy()
    ref = np.zeros((4, 3, 6))
    for i in range(4):
        for t in range(3):
            v = xn[i, t]
            ref[i, t] = (wa @ v + ba) * fn(wb @ v + bb)
    np.testing.assert_allclose(m(x).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in m.parameters()) == 2 * (6 * 6 + 6)  # W_a, W_b only


def test_nlir_linear_side_scales_linearly():
    """One-sidedness: with b_a = 0, scaling W_a scales the update by the same factor (phi only
    acts on the other operand)."""
    torch.manual_seed(1)
    m = NLIR(5, "silu")
    with torch.no_grad():
        m.a.bias.zero_()
    x = torch.randn(7, 5)
    y = m(x)
    with torch.no_grad():
        m.a.weight.mul_(3.0)
    torch.testing.assert_close(m(x), 3.0 * y)


def test_tokenformer_layer_matches_numpy_reference():
    """h1 = h + P(MHA(LN1 h) under the mask); h2 = h1 + (W_a LN2 h1) * silu(W_b LN2 h1)."""
    torch.manual_seed(2)
    cfg = ModelConfig(d_model=8, num_heads=2)
    layer = TokenFormerLayer(cfg).eval()
    F, L = 2, 5
    n, d, H = F + L, 8, 2
    mask = bfts_mask(F, L, 1, True)
    h = torch.randn(2, n, d)
    out = layer(h, mask[None].expand(2, -1, -1)).detach().double().numpy()
    wqkv, bqkv = W(layer.qkv)
    wp, bp = W(layer.proj)
    (wa, ba), (wb, bb) = W(layer.mix.a), W(layer.mix.b)
    m = mask.numpy()
    hd = d // H
    for b in range(2):
        x = h[b].double().numpy()
        xn = layer_norm(x, layer.ln1)
        qkv = xn @ wqkv.T + bqkv  # [n, 3d]: q | k | v, heads contiguous inside each
        att = np.zeros((n, d))
        for head in range(H):
            q = qkv[:, head * hd : (head + 1) * hd]
            k = qkv[:, d + head * hd : d + (head + 1) * hd]
            v = qkv[:, 2 * d + head * hd : 2 * d + (head + 1) * hd]
            for i in range(n):
                s = np.array([q[i] @ k[j] / np.sqrt(hd) if m[i, j] else -np.inf for j in range(n)])
                p = np.exp(s - s.max())
                p /= p.sum()
                att[i, head * hd : (head + 1) * hd] = p @ v
        h1 = x + att @ wp.T + bp
        z = layer_norm(h1, layer.ln2)
        ref = h1 + (z @ wa.T + ba) * silu(z @ wb.T + bb)
        np.testing.assert_allclose(out[b], ref, rtol=1e-4, atol=1e-5)


def test_swiglu_form_is_kept_as_an_ablation():
    layer = TokenFormerLayer(ModelConfig(d_model=8, num_heads=2, nlir_form="swiglu"))
    assert layer.mix.a.out_features == 16 and layer.mix.o.in_features == 16


def test_field_generator_matches_formula():
    """G = relu(Linear(F*d -> F*d)(flatten(E))) * gamma, reshaped back to [B, F, d]."""
    torch.manual_seed(3)
    gen = FieldGenerator(3 * 4, gamma=0.5)
    e = torch.randn(5, 3, 4)
    w, b = W(gen.lin)
    flat = e.double().numpy().reshape(5, 12)
    ref = (np.maximum(flat @ w.T + b, 0) * 0.5).reshape(5, 3, 4)
    np.testing.assert_allclose(gen(e).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_cross_layers_plain_and_sfg_against_loop():
    """DCNv2 x_{l+1} = x0 * (W x_l + b) + x_l; SFG: x_{l+1} = x_l + G_l(x0) * (W x_l + b)."""
    torch.manual_seed(4)
    d = 6
    x0, x = torch.randn(3, d), torch.randn(3, d)
    plain, sfg = CrossLayer(d), CrossLayer(d, sfg=True, gamma=2.0)
    for layer, generated in ((plain, False), (sfg, True)):
        w, b = W(layer.w)
        out = layer(x0, x).detach().double().numpy()
        for r in range(3):
            a, v = x0[r].double().numpy(), x[r].double().numpy()
            if generated:
                gw, gb = W(layer.gen.lin)
                a = np.maximum(gw @ a + gb, 0) * 2.0
            ref = np.array([v[i] + a[i] * (sum(w[i, j] * v[j] for j in range(d)) + b[i]) for i in range(d)])
            np.testing.assert_allclose(out[r], ref, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def target_model():
    t = toy_table(48)
    enc = FeatureEncoder.fit(t, SPEC)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, num_heads=2, ur_dim=8, ir_dim=8, target_tokens=True)
    return FoundationModel(cfg, SPEC, enc.vocab_sizes).eval(), enc.encode(t)


def test_target_tokens_leave_ur_independent_of_the_target(target_model):
    model, batch = target_model
    other = dict(batch)
    other["item_id"] = torch.roll(batch["item_id"], 1)
    other["category"] = torch.roll(batch["category"], 1)
    ur, _, x0 = model.mix_input(batch)
    ur2, _, x02 = model.mix_input(other)
    torch.testing.assert_close(ur, ur2)  # UR (the published user vector) ignores the target item
    torch.testing.assert_close(ur, model.representations(batch, ["user_tower"])["user_tower"])
    # ... while the mix tower's user slot is target-aware
    assert not torch.allclose(x0[:, :8], x02[:, :8])


def test_target_token_reads_the_stream_by_attention(target_model):
    """The target token attends to the valid field and behaviour tokens only: padded events
    cannot move its output, a valid event can."""
    model, batch = target_model
    tower = model.user_tower
    fields = torch.stack([model._emb(c, batch[c]) for c in model.user_fields], 1)
    seq = model._emb(model.seq_field, batch["hist_seq"])
    target = model.target_proj(model._item_fields(batch).flatten(1))
    _, _, ta = tower.encode(fields, seq, batch["hist_mask"], target)
    # changing a padded history slot's embedding cannot move the target output
    seq2 = seq.clone()
    pad = ~batch["hist_mask"]
    seq2[pad] += 5.0
    _, _, ta2 = tower.encode(fields, seq2, batch["hist_mask"], target)
    torch.testing.assert_close(ta, ta2)
    # changing a valid history event moves it (the target reads the behaviour tokens)
    row, col = [int(v) for v in batch["hist_mask"].nonzero()[0]]
    seq3 = seq.clone()
    seq3[row, col] += torch.randn(seq.shape[-1]) * 3
    _, _, ta3 = tower.encode(fields, seq3, batch["hist_mask"], target)
    assert not torch.allclose(ta[row], ta3[row])


def test_target_tokens_train_and_keep_layer_api(target_model):
    model, batch = target_model
    model.train()
    out = model(batch)
    assert out.shape == (48, 2) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.target_proj.weight.grad is not None and model.target_proj.weight.grad.abs().sum() > 0
    model.eval()
    names = model.layer_names()
    assert "ad.cross_1" in names and "ad.mlp_1" in names and "content.mlp_2" in names
    reps = model.representations(batch, ["ad.mlp_1", "ad.cross_1"])
    assert reps["ad.cross_1"].shape == (48, 16)
