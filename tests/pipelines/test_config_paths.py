"""Run-root paths: local paths and file:// URIs; object-store URIs refused by name.
Checkpoint reuse never picks a temp folder left by a killed save."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import RunLayout
from pipelines import RunConfig
from pipelines.steps import reusable_checkpoint


def test_file_uri_root_is_the_local_path(tmp_path):
    cfg = RunConfig.model_validate({"root": f"file://{tmp_path}/a%20b"})
    assert cfg.root == tmp_path / "a b"
    assert RunConfig.model_validate({"root": "file://localhost/tmp/x"}).root == Path("/tmp/x")
    assert RunConfig.model_validate({"root": str(tmp_path)}).root == tmp_path


@pytest.mark.parametrize("uri", ["s3://bucket/runs/demo", "gs://b/r", "abfss://c@a.dfs.core.windows.net/r"])
def test_object_store_root_is_refused_naming_the_scheme(uri):
    with pytest.raises(ValidationError, match=r"root[\s\S]*" + uri.split(":")[0] + r":// is not supported"):
        RunConfig.model_validate({"root": uri})


def test_file_uri_with_a_host_is_refused():
    with pytest.raises(ValidationError, match="must name a local path"):
        RunConfig.model_validate({"root": "file://otherhost/tmp/x"})


def test_reusable_checkpoint_skips_temp_folders(tmp_path):
    from contracts import config_hash

    cfg = RunConfig.model_validate({"root": str(tmp_path)})
    layout = RunLayout(tmp_path)
    # a killed save leaves .tmp-<version>-<hex> with every file, manifest last
    tmp = layout.checkpoints / ".tmp-v1-abcd"
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text('{"not": "read"}')
    assert reusable_checkpoint(layout, cfg, ["2026-01-01"]) is None
    assert config_hash(cfg.pretrain)  # the lookup key exists for a default config


def test_reusable_checkpoint_matches_the_trained_days_exactly(tmp_path):
    from contracts import CheckpointManifest, DatasetSpec, config_hash

    cfg = RunConfig.model_validate({"root": str(tmp_path)})
    layout = RunLayout(tmp_path)
    spec = DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click"]).canonical()

    def save(name: str, **fields) -> None:
        m = CheckpointManifest(
            model_version=name,
            created_at="2026-01-01T00:00:00Z",
            dataset=spec,
            model_config_data={},
            config_hash=config_hash(cfg.pretrain),
            vocab_sizes={},
            layers=[{"name": "ad.mlp_1", "dim": 8, "kind": "CR"}],
            default_cr_layer="ad.mlp_1",
            **fields,
        )
        (layout.checkpoints / name).mkdir(parents=True)
        (layout.checkpoints / name / "manifest.json").write_text(m.model_dump_json())

    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    save("a-gap", data_version="log@1", train_days=["2026-01-01", "2026-01-03"])
    # same first and last day, one day missing: the recorded list is what decides
    assert reusable_checkpoint(layout, cfg, days) is None
    save("b-exact", data_version="log@2", train_days=days)
    assert reusable_checkpoint(layout, cfg, days) == layout.checkpoints / "b-exact"
    assert reusable_checkpoint(layout, cfg, days[:2]) is None
    # a manifest from before train_days was recorded: matched by its data_version text
    save("c-legacy", data_version="log@3 train=2026-01-01..2026-01-02 valid=2026-01-03..2026-01-03")
    assert reusable_checkpoint(layout, cfg, days[:2]) == layout.checkpoints / "c-legacy"
