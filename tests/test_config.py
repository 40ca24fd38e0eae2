from __future__ import annotations

import dataclasses

import pytest

from ray_distill.config import ExperimentConfig, load_config, to_yaml
from ray_distill.config.reference import reference
from ray_distill.errors import ConfigError

from conftest import REPO

QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def test_every_experiment_config_loads():
    configs = sorted((REPO / "experiments").rglob("*.yaml"))
    assert QUICKSTART in configs
    for path in configs:
        assert isinstance(load_config(path), ExperimentConfig)


def test_defaults_file_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("run:\n  name: mine\nworld:\n  num_passages: 300\n")
    config = load_config(path, ["world.num_passages=400", "models.student=tiny-random"])
    assert config.run.name == "mine"
    assert config.run.dir == "runs/mine"  # interpolation resolved after merging
    assert config.world.num_passages == 400
    assert config.models.student == "tiny-random"
    assert config.world.num_math_questions == ExperimentConfig().world.num_math_questions


def test_a_config_file_builds_on_its_base(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "single.yaml").write_text("run: {name: one}\nmodels: {student: s1}\ntrain: {epochs: 3}\n")
    (tmp_path / "sweep.yaml").write_text("base: shared/single.yaml\nrun: {name: many}\nsweep: {students: [a, b]}\n")
    config = load_config(tmp_path / "sweep.yaml", ["train.lr=0.1"])
    assert (config.run.name, config.models.student, config.train.epochs) == ("many", "s1", 3)
    assert (config.sweep.students, config.train.lr) == (["a", "b"], 0.1)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(tmp_path / "gone.yaml")


def test_resolved_yaml_reloads_to_the_same_config(tmp_path):
    config = load_config(QUICKSTART, ["world.seed=7"])
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(to_yaml(config))
    assert load_config(dumped) == config


@pytest.mark.parametrize(
    "content, overrides, message",
    [
        ("world:\n  num_pasages: 300\n", [], "unknown key 'world.num_pasages'"),
        ("", ["world.sed=1"], "command-line overrides: unknown key 'world.sed'"),
        ("", ["nosection.key=1"], "unknown key 'nosection"),
        ("world:\n  num_passages: lots\n", [], "world.num_passages"),
        ("", ["world.test_fraction=high"], "world.test_fraction"),
        ("", ["run.stages=[world,teleport]"], "run.stages: unknown stage 'teleport'"),
        ("", ["world.num_passages=5"], "world.num_passages: must be at least 100"),
        ("", ["world.test_fraction=1.5"], "world.test_fraction: must be in [0, 1)"),
        ("", ["run.stages=[world,world]"], "run.stages: lists a stage twice"),
        ("", ["run.dir=${missing}"], "run.dir: cannot resolve interpolation"),
        ("", ["justakey"], "is not of the form key=value"),
        ("world: [1, 2\n", [], "is not valid YAML"),
        ("- a\n- b\n", [], "must hold a mapping"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, content, overrides, message):
    path = tmp_path / "exp.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert message in str(err.value)


def test_all_range_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["world.num_passages=5", "world.shard_size=0", "world.num_fact_questions=-1"])
    text = str(err.value)
    for key in ("world.num_passages", "world.shard_size", "world.num_fact_questions"):
        assert key in text


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_is_documented():
    for section in dataclasses.fields(ExperimentConfig):
        for f in dataclasses.fields(section.default_factory):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"


def test_config_reference_doc_matches_schema():
    doc = REPO / "docs" / "CONFIG.md"
    assert doc.read_text() == reference() + "\n", "docs/CONFIG.md is stale: ray-distill config reference > docs/CONFIG.md"
