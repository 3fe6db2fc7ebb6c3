"""The ranking model's gate modes against a numpy reference, and its refusal of vectors of
another width than it was trained with."""

import numpy as np
import pytest
import torch

from downstream.model import RankingModel, gate_groups

VOCAB = {"user_id": 5, "age": 3, "item_id": 4, "category": 2}
REPS = {"user_ur": 3, "item_ir": 3, "user_cr": 2, "item_cr": 2}


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {c: torch.randint(0, v, (n,), generator=g) for c, v in VOCAB.items()}
    for r, d in REPS.items():
        b[f"rep:{r}"] = torch.randn(n, d, generator=g)
        b[f"present:{r}"] = torch.ones(n, dtype=torch.bool)
    return b


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("mode", ["all", "cross", "own"])
def test_gate_modes_match_numpy(mode):
    torch.manual_seed(0)
    m = RankingModel(
        VOCAB,
        2,
        emb_dim=4,
        hidden=[8],
        rep_dims=REPS,
        adapter="gate",
        rep_norm=False,
        gate_mode=mode,
        item_fields=["item_id", "category"],
    ).eval()
    b = _batch()
    emb = m.embed(b).detach().numpy()  # [B, F, D]; fields: user_id, age, item_id, category
    want = {
        "all": [([0, 1, 2, 3], list(REPS))],
        "cross": [([0, 1], ["item_ir", "item_cr"]), ([2, 3], ["user_ur", "user_cr"])],
        "own": [([0, 1], ["user_ur", "user_cr"]), ([2, 3], ["item_ir", "item_cr"])],
    }[mode]
    assert m.gate_groups == want
    ref = emb.copy()
    for g, (idx, src) in zip(m.gates, want):
        r = np.concatenate([b[f"rep:{n}"].numpy() for n in src], axis=1)
        w, bias = g.proj.weight.detach().numpy(), g.proj.bias.detach().numpy()
        ref[:, idx] = emb[:, idx] * _sigmoid(r @ w.T + bias).reshape(len(r), len(idx), 4)
    # the MLP sees exactly the gated embeddings
    captured = {}

    def hook(mod, inp, out):
        captured["x"] = inp[0].detach().numpy()

    m.bottom.register_forward_hook(hook)
    m(b)
    np.testing.assert_allclose(captured["x"], ref.reshape(len(ref), -1), rtol=1e-5, atol=1e-6)


def test_gate_zero_init_and_bias_start_every_gate_at_sigmoid_b():
    m = RankingModel(VOCAB, 1, emb_dim=4, rep_dims=REPS, adapter="gate", gate_zero_init=True, gate_bias=0.0)
    b = _batch()
    g = m.gates[0].gate(torch.cat([m.reps(b)[n] for n in m.reps.names], -1))
    np.testing.assert_allclose(g.detach().numpy(), 0.5)


def test_one_side_without_vectors_falls_back_to_all():
    from downstream.model import FieldEmbedding

    e = FieldEmbedding(VOCAB, 4, None)
    assert gate_groups(e, ["user_ur"], "cross", ["item_id", "category"]) == [
        ([0, 1], ["user_ur"]),
        ([2, 3], ["user_ur"]),
    ]
    with pytest.raises(ValueError, match="gate_mode"):
        gate_groups(e, ["user_ur"], "diagonal", [])


@pytest.mark.parametrize("adapter", ["linear", "gate", "gate_linear"])
def test_vectors_of_another_dim_than_trained_are_refused(adapter):
    m = RankingModel(VOCAB, 1, emb_dim=4, rep_dims=REPS, adapter=adapter)
    b = _batch()
    b["rep:user_cr"] = torch.randn(6, 5)  # the table was republished at width 5
    with pytest.raises(ValueError, match="table user_cr: vectors of dim 5, the model was trained with dim 2"):
        m(b)
