"""A tiny generated log and an untrained (random-weight) checkpoint saved through pretrain's
save path: extraction needs a real checkpoint folder, not a trained model."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from contracts import CheckpointManifest, RunLayout
    from datasources import GeneratorConfig, generate_log, read_log
    from pretrain import FeatureEncoder, FoundationModel, ModelConfig
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(tmp_path_factory.mktemp("run"))
    gen = GeneratorConfig(num_users=60, num_items=40, days=2, rows_per_day=300, seq_len=5,
                          windows_per_day=2, start_date=date(2026, 1, 1))
    spec = generate_log(gen, layout.log)
    table = read_log(layout.log)
    encoder = FeatureEncoder.fit(table, spec, 1, None)
    mcfg = ModelConfig(embed_dim=8, d_model=8, num_heads=2, user_layers=1, ur_dim=8, ir_dim=8,
                       item_hidden=16, cross_layers=1, mlp_dims=[16, 8])
    model = FoundationModel(mcfg, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version="tiny-v1", created_at=datetime.now(timezone.utc), dataset=spec.canonical(),
        model_config_data=mcfg.model_dump(mode="json"), config_hash="tiny", data_version="test",
        vocab_sizes=encoder.vocab_sizes, layers=model.layer_infos(), default_cr_layer=model.default_cr_layer,
    )
    ckpt = save_checkpoint(layout.checkpoints, model, encoder, manifest)
    return layout, ckpt, ["2026-01-01", "2026-01-02"]
