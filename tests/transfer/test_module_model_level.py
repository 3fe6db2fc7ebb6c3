"""Module-level (isomorphic) and model-level (retrieval adapter) transfer."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from pretrain import FeatureEncoder, FoundationModel, LoadedModel, ModelConfig
from tests.downstream.synth import SPEC
from transfer import RetrievalAdapter, isomorphic_from_checkpoint


def _loaded():
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i1"],
            "age": ["a", "b", "a"],
            "category": ["c", "c", "d"],
            "hist_seq": [["i1"], [], ["i2", "i1"]],
        }
    )
    enc = FeatureEncoder.fit(table, SPEC)
    torch.manual_seed(0)
    cfg = ModelConfig(cross_layers=2, mlp_dims=[16, 8], d_model=8, num_heads=2, user_layers=1, ur_dim=8, ir_dim=8)
    model = FoundationModel(cfg, SPEC, enc.vocab_sizes)
    return LoadedModel(model=model, encoder=enc, manifest=None, path=None), table


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_isomorphic_copies_embeddings_and_first_k_layers():
    loaded, _ = _loaded()
    src = loaded.model
    src_layers = [*src.branches["ad"].cross, *src.branches["ad"].mlp]
    torch.manual_seed(123)  # fresh init differs from the source
    m0 = isomorphic_from_checkpoint(loaded, k=0, num_tasks=2)
    assert _same(m0.base.embeddings, src.embeddings)
    assert not _same(m0.base.user_tower, src.user_tower)
    assert not any(_same(a, b) for a, b in zip(m0.interaction_layers(), src_layers))
    m3 = isomorphic_from_checkpoint(loaded, k=3, num_tasks=2)
    assert _same(m3.base.user_tower, src.user_tower) and _same(m3.base.item_tower, src.item_tower)
    flags = [_same(a, b) for a, b in zip(m3.interaction_layers(), src_layers)]
    assert flags == [True, True, True, False]  # cross_1, cross_2, mlp_1 copied; mlp_2 fresh
    with pytest.raises(ValueError, match="4 interaction layers"):
        isomorphic_from_checkpoint(loaded, k=5)


def test_isomorphic_forward_matches_the_foundation_path_up_to_the_heads():
    loaded, table = _loaded()
    full = isomorphic_from_checkpoint(loaded, k=4, num_tasks=2)
    full.eval()
    batch = loaded.encoder.encode(
        table.append_column("scenario", pa.array([0, 1, 0], pa.int32()))
        .append_column("sample_type", pa.array(["ad"] * 3))
        .append_column("click", pa.array([1.0, 0.0, 1.0], pa.float32()))
        .append_column("conversion", pa.array([None, 0.0, 1.0], pa.float32()))
    )
    with torch.no_grad():
        feats = loaded.model.eval().representations(batch, ["ad.mlp_2"])["ad.mlp_2"]
        np.testing.assert_allclose(full(batch).numpy(), full.heads(feats).numpy(), rtol=1e-5, atol=1e-6)
    assert full(batch).shape == (3, 2)


def test_retrieval_adapter_scores_by_inner_product_with_ir():
    torch.manual_seed(0)
    A = RetrievalAdapter(6, 4, num_tasks=2)
    ru, ir = torch.randn(5, 6), torch.randn(5, 4)
    W = A.proj.weight.detach().numpy().reshape(2, 4, 6)
    ref = np.einsum("tdu,bu,bd->bt", W, ru.numpy(), ir.numpy()) + A.bias.detach().numpy()
    np.testing.assert_allclose(A(ru, ir).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert A.user_vectors(ru).shape == (5, 2, 4)
    assert RetrievalAdapter(6, 4, hidden=8)(ru, ir).shape == (5, 1)
