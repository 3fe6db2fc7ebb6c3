"""Shared fixtures' building blocks for the pipeline tests."""

from __future__ import annotations

from contracts import RunLayout


def untrained_checkpoint(cfg, model_version: str) -> None:
    """A random-weight checkpoint of ``cfg.pretrain`` (a RunConfig's) on the run's train
    days, named ``model_version``, saved through pretrain's save path where the pretrain
    step looks for a reusable one: for tests of what happens after training (Ray Train's
    ~25 s start-up is paid once, in test_run)."""
    from datetime import datetime, timezone

    from contracts import CheckpointManifest, config_hash
    from datasources import log_days, materialize, read_log
    from pretrain import FeatureEncoder, FoundationModel
    from pretrain.checkpoint import save_checkpoint

    layout = RunLayout(cfg.root)
    spec = materialize(cfg.source, layout.log).canonical()
    train = cfg.split.resolve(log_days(layout.log))["train"]
    encoder = FeatureEncoder.fit(
        read_log(layout.log, train), spec, cfg.pretrain.train.min_count, cfg.pretrain.train.max_vocab
    )
    model = FoundationModel(cfg.pretrain.model, spec, encoder.vocab_sizes).eval()
    manifest = CheckpointManifest(
        model_version=model_version,
        created_at=datetime.now(timezone.utc),
        dataset=spec,
        model_config_data=cfg.pretrain.model.model_dump(mode="json"),
        config_hash=config_hash(cfg.pretrain),
        data_version="untrained",
        train_days=train,
        vocab_sizes=encoder.vocab_sizes,
        layers=model.layer_infos(),
        default_cr_layer=model.default_cr_layer,
    )
    save_checkpoint(layout.checkpoints, model, encoder, manifest)
