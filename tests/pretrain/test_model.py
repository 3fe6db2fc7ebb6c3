"""BFTS masks vs hand-built ones, token shapes, the model's layer API (NLIR, SFG and the
target-token path: test_blocks.py)."""

from __future__ import annotations

import pytest
import torch

from pretrain import FeatureEncoder, FoundationModel, ModelConfig
from pretrain.tokenformer import TokenFormerLayer, bfts_mask, bfts_windows
from tests.pretrain.toy import SPEC, toy_table


def hand_mask(F: int, L: int, w: int | None, global_fields: bool) -> torch.Tensor:
    n = F + L
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if w is None or abs(i - j) <= w:
                m[i, j] = True
            if global_fields and (i < F or j < F):
                m[i, j] = True
    return m


@pytest.mark.parametrize("F,L,w,g", [(3, 6, None, True), (3, 6, 2, True), (2, 7, 1, False), (0, 5, 2, True)])
def test_bfts_mask_matches_hand_built(F, L, w, g):
    assert torch.equal(bfts_mask(F, L, w, g), hand_mask(F, L, w, g))


def test_bfts_window_schedule():
    cfg = ModelConfig(user_layers=5, bfts_full_layers=2, bfts_window=8, bfts_shrink=0.5, bfts_min_window=2)
    assert bfts_windows(cfg) == [None, None, 8, 4, 2]
    assert bfts_windows(ModelConfig(user_layers=2, bfts_full_layers=2)) == [None, None]


def test_sliding_layer_ignores_tokens_outside_window():
    """Perturbing a sequence token outside a query's window (and not a field) leaves that
    query's output unchanged in a single sliding-window layer."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, num_heads=2)
    layer = TokenFormerLayer(cfg).eval()
    F, L, w = 2, 8, 1
    mask = bfts_mask(F, L, w, True)[None].expand(1, -1, -1)
    h = torch.randn(1, F + L, 8)
    h2 = h.clone()
    h2[0, F + 7] += torch.randn(8) * 3  # last event (not a constant shift: LayerNorm would remove it)
    out, out2 = layer(h, mask), layer(h2, mask)
    torch.testing.assert_close(out[0, F + 2], out2[0, F + 2])  # |2-7| > 1: unaffected
    assert not torch.allclose(out[0, 0], out2[0, 0])  # field token sees everything


@pytest.fixture(scope="module")
def model_and_batch():
    t = toy_table(64)
    enc = FeatureEncoder.fit(t, SPEC)
    torch.manual_seed(0)
    return FoundationModel(ModelConfig(), SPEC, enc.vocab_sizes).eval(), enc.encode(t)


def test_forward_picks_branch_and_head(model_and_batch):
    model, batch = model_and_batch
    logits = model(batch)
    assert logits.shape == (64, 2)
    ur, _ = model.user_representation(batch)
    x0 = torch.cat([ur, model.item_representation(batch)], 1)
    for r in range(64):
        branch = "ad" if batch["is_ad"][r] else "content"
        heads, _ = model.branches[branch](x0[r : r + 1])
        torch.testing.assert_close(logits[r], heads[0, batch["scenario"][r]], atol=1e-5, rtol=1e-5)


def test_representations_and_layer_infos(model_and_batch):
    model, batch = model_and_batch
    infos = {li.name: li for li in model.layer_infos()}
    assert list(infos) == [
        "user_tower",
        "item_tower",
        "ad.cross_1",
        "ad.cross_2",
        "ad.mlp_1",
        "ad.mlp_2",
        "content.cross_1",
        "content.cross_2",
        "content.mlp_1",
        "content.mlp_2",
    ]
    assert model.default_cr_layer == "ad.mlp_1"
    reps = model.representations(batch, ["ad.mlp_1", "user_tower"])
    assert list(reps) == ["ad.mlp_1", "user_tower"]
    for name, v in reps.items():
        assert v.shape == (64, infos[name].dim)
    with pytest.raises(KeyError, match="valid: .*ad.mlp_2"):
        model.representations(batch, ["ad.mlp_9"])


def test_user_tower_sees_no_target_item(model_and_batch):
    model, batch = model_and_batch
    other = dict(batch)
    other["item_id"] = torch.roll(batch["item_id"], 1)
    other["category"] = torch.roll(batch["category"], 1)
    torch.testing.assert_close(
        model.representations(batch, ["user_tower"])["user_tower"],
        model.representations(other, ["user_tower"])["user_tower"],
    )


def test_sequence_tokens_shape_and_padding(model_and_batch):
    model, batch = model_and_batch
    _, toks = model.user_representation(batch, keep_seq_tokens=True)
    assert len(toks) == model.cfg.user_layers + 1
    assert toks[-1].shape == (64, SPEC.sequence.max_len, model.cfg.d_model)
    assert (toks[-1][~batch["hist_mask"]] == 0).all()


@pytest.mark.parametrize(
    "override",
    [
        {"use_sequence": False},
        {"nlir": "off"},
        {"nlir_form": "swiglu"},
        {"sfg": True},
        {"target_tokens": True},
        {"bfts_full_layers": 3},
        {"mlp_dims": [16], "cross_layers": 0},
    ],
)
def test_ablation_variants_run(override):
    t = toy_table(32)
    enc = FeatureEncoder.fit(t, SPEC)
    model = FoundationModel(ModelConfig(**override), SPEC, enc.vocab_sizes)
    b = enc.encode(t)
    out = model(b)
    assert out.shape == (32, 2) and torch.isfinite(out).all()
    out.sum().backward()


def test_out_of_range_ids_are_named(model_and_batch):
    model, batch = model_and_batch
    bad = dict(batch)
    bad["hist_seq"] = batch["hist_seq"].clone()
    bad["hist_seq"][0, -1] = 10_000
    with pytest.raises(ValueError, match="hist_seq.*outside the vocabulary"):
        model(bad)
    bad = dict(batch)
    bad["city"] = batch["city"] - 5
    with pytest.raises(ValueError, match="city"):
        model.representations(bad, ["user_tower"])
    bad = {k: v for k, v in batch.items() if k != "is_ad"}
    with pytest.raises(ValueError, match="is_ad"):
        model(bad)


def test_warm_start_copies_old_rows_into_grown_tables():
    t = toy_table(64)
    enc = FeatureEncoder.fit(t, SPEC)
    old = FoundationModel(ModelConfig(), SPEC, enc.vocab_sizes)
    grown = dict(enc.vocab_sizes, user_id=enc.vocab_sizes["user_id"] + 4)
    new = FoundationModel(ModelConfig(), SPEC, grown)
    with torch.no_grad():
        new.load_warm_start(old.state_dict())
    k = new.columns.index("user_id")
    torch.testing.assert_close(new.embeddings[k].weight[: enc.vocab_sizes["user_id"]], old.embeddings[k].weight)
    torch.testing.assert_close(new.branches["ad"].heads.weight, old.branches["ad"].heads.weight)
    other = FoundationModel(ModelConfig(ur_dim=8), SPEC, enc.vocab_sizes)
    with pytest.raises(ValueError, match="warm start"):
        other.load_warm_start(old.state_dict())
