import pytest

from contracts import CheckpointManifest, ConfigError, DatasetSpec, RunLayout, load_config
from contracts.tables import REPRESENTATION_TABLES, TableProperties


def test_misspelled_key_is_named(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("name: x\nscenarios: {0: a}\ntasks: [click]\nuser_featurs: [age]\n")
    with pytest.raises(ConfigError, match=r"user_featurs: unknown key"):
        load_config(p, DatasetSpec)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("name: x\nscenarios: {0: a}\ntasks: [click]\nsequence: {max_len: lots}\n")
    with pytest.raises(ConfigError, match=r"sequence.max_len"):
        load_config(p, DatasetSpec)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", DatasetSpec)
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, DatasetSpec)


def test_spec_consistency():
    with pytest.raises(ValueError, match="positive_task"):
        DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click"], sequence={"positive_task": "buy"})
    with pytest.raises(ValueError, match="item_field"):
        DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click"], sequence={"item_field": "age"})
    with pytest.raises(ValueError, match="duplicate"):
        DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click", "click"])


def test_canonical_spec_renames_columns():
    spec = DatasetSpec(
        name="x",
        user_id="uid",
        item_id="iid",
        event_time="ts",
        scenario="sc",
        scenarios={0: "a"},
        tasks=["click"],
        item_features=["cat"],
        sequence={"item_field": "iid"},
    )
    c = spec.canonical()
    assert (c.user_id, c.item_id, c.event_time, c.sequence.item_field, c.sequence.column) == (
        "user_id",
        "item_id",
        "event_time",
        "item_id",
        "hist_seq",
    )
    assert c.categorical_columns == ["user_id", "item_id", "cat"]


def test_manifest_compatibility_names_the_difference():
    spec = DatasetSpec(name="x", scenarios={0: "a"}, tasks=["click"], user_features=["age"]).canonical()
    m = CheckpointManifest(
        model_version="v1",
        created_at="2026-01-01T00:00:00Z",
        dataset=spec,
        model_config_data={},
        config_hash="h",
        data_version="log@3",
        vocab_sizes={},
        layers=[{"name": "ad.mlp_1", "dim": 8, "kind": "CR"}],
        default_cr_layer="ad.mlp_1",
    )
    other = spec.model_copy(update={"user_features": ["age", "city"], "scenarios": {0: "a", 9: "z"}})
    with pytest.raises(ValueError, match=r"user_features.*scenarios \[9\]"):
        m.check_compatible(other)
    with pytest.raises(KeyError, match="valid: ad.mlp_1"):
        m.layer("ad.mlp_9")


def test_table_schema_and_properties_round_trip():
    t = REPRESENTATION_TABLES["user_cr"]
    schema = t.arrow_schema(16)
    assert schema.field("vector").type.list_size == 16
    assert "decayed_sum" in schema.names
    assert "decayed_sum" not in REPRESENTATION_TABLES["item_ir"].arrow_schema(4).names
    props = TableProperties(dim=16, normalisation="l2", source_checkpoint="v1", config_hash="abc", tau_seconds=86400.0)
    assert TableProperties.from_delta(props.to_delta()) == props


def test_layout_paths(tmp_path):
    lay = RunLayout(tmp_path)
    assert lay.table("user_ur") == tmp_path / "tables" / "user_ur"
    assert lay.samples("2026-01-02").name == "ds=2026-01-02"
