"""Adapters against numpy references."""

import numpy as np
import pytest
import torch

from transfer import CrossedEmbeddingToken, GateAdapter, LinearAdapter, MissingDefault


def _np(t):
    return t.detach().numpy().astype(np.float64)


def test_gate_adapter_matches_numpy():
    torch.manual_seed(0)
    B, F, D, d = 5, 3, 4, 6
    gate = GateAdapter(d, F, D)
    torch.nn.init.normal_(gate.proj.bias)
    emb, r = torch.randn(B, F, D), torch.randn(B, d)
    out = gate(emb, r)
    W, b = _np(gate.proj.weight), _np(gate.proj.bias)
    ref = _np(emb) * (1 / (1 + np.exp(-(_np(r) @ W.T + b)))).reshape(B, F, D)
    np.testing.assert_allclose(_np(out), ref, rtol=1e-5, atol=1e-6)
    # flat [B, F*D] input gets the same gate
    np.testing.assert_allclose(_np(gate(emb.flatten(1), r)), ref.reshape(B, -1), rtol=1e-5, atol=1e-6)


def test_gate_adapter_rejects_wrong_shape():
    gate = GateAdapter(6, 3, 4)
    with pytest.raises(ValueError, match="do not match"):
        gate(torch.randn(2, 4, 4), torch.randn(2, 6))


def test_crossed_token_matches_numpy():
    torch.manual_seed(1)
    tok = CrossedEmbeddingToken(8, 5)
    zu, zi = torch.randn(7, 8), torch.randn(7, 8)
    W, b = _np(tok.proj.weight), _np(tok.proj.bias)
    ref = (_np(zu) * _np(zi)) @ W.T + b
    np.testing.assert_allclose(_np(tok(zu, zi)), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="crossed token"):
        tok(torch.randn(7, 8), torch.randn(7, 6))


def test_linear_adapter_and_missing_default():
    torch.manual_seed(2)
    lin = LinearAdapter(4, 3)
    r = torch.randn(6, 4)
    np.testing.assert_allclose(_np(lin(r)), _np(r) @ _np(lin.proj.weight).T + _np(lin.proj.bias), rtol=1e-5, atol=1e-6)
    md = MissingDefault(4)
    with torch.no_grad():
        md.default.copy_(torch.arange(4.0))
    present = torch.tensor([True, False, True, False, True, True])
    out = _np(md(r, present))
    np.testing.assert_allclose(out[present.numpy()], _np(r)[present.numpy()])
    np.testing.assert_allclose(out[~present.numpy()], np.tile(np.arange(4.0), (2, 1)))
    # the default is learned: it receives gradient from absent rows only
    md(r, present).sum().backward()
    np.testing.assert_allclose(md.default.grad.numpy(), np.full(4, 2.0))
