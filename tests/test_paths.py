"""The run layout (`stages/paths.py`): looking a directory up, or asking a stage whether it is done,
never writes to the run directory; stores record their settings when they open."""

from __future__ import annotations

import os
from pathlib import Path

from ray_distill.config import load_config
from ray_distill.registry import STAGES
from ray_distill.stages import load, paths
from ray_distill.stages.base import StageContext
from ray_distill.stages.items import cot_items, evaluate_items, generate_items
from ray_distill.stages.pipeline import run_pipeline

from conftest import REPO


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_lookups_and_completeness_checks_write_nothing(tmp_path):
    config = load_config(REPO / "experiments" / "quickstart.yaml", [
        f"run.dir={tmp_path}", "world.num_passages=200", "world.num_fact_questions=8", "world.num_math_questions=8",
        "evaluate.models=[base,distilled]"])
    run_pipeline(config, ["world"], progress=False)
    before = _tree(tmp_path)
    ctx = StageContext(config, tmp_path)
    models = paths.evaluated_models(ctx)
    looked_up = [paths.world_dir(ctx), paths.index_dir(ctx), paths.cot_dir(ctx), paths.generate_dir(ctx),
                 paths.filter_dir(ctx), paths.train_source(ctx), paths.train_dir(ctx), paths.student_model_dir(ctx),
                 *(paths.evaluate_dir(ctx, model) for model in models), paths.sweep_dir(ctx), paths.report_dir(ctx)]
    assert cot_items(ctx) and generate_items(ctx, check_prefixes=False) and evaluate_items(ctx)
    # What `ray-distill run` asks of each stage before deciding to skip it, here for a student never trained.
    assert [name for name in STAGES if load(name).is_complete(ctx)] == ["world"]
    assert _tree(tmp_path) == before
    assert not any(p.exists() for p in looked_up[1:])
    # Each distinct setting has its own directory, and the same config always finds the same one.
    other = StageContext(load_config(REPO / "experiments" / "quickstart.yaml", [
        f"run.dir={tmp_path}", "world.num_passages=200", "world.num_fact_questions=8", "world.num_math_questions=8",
        "generate.max_steps=2"]), tmp_path)
    assert paths.generate_dir(other) != paths.generate_dir(ctx) and paths.cot_dir(other) == paths.cot_dir(ctx)


def test_a_training_sets_digest_is_remembered_until_the_file_changes(tmp_path):
    from ray_distill.data.datasets import file_digest

    data = tmp_path / "trajectories.parquet"
    data.write_bytes(b"first")
    first = file_digest(data)
    assert file_digest(data) == first
    replacement = tmp_path / "new.parquet"
    replacement.write_bytes(b"other")
    os.replace(replacement, data)  # how the filter writes its tables
    assert file_digest(data) != first


def test_every_path_is_absolute_under_a_relative_run_dir_and_a_moved_run_keeps_its_stores(tmp_path, monkeypatch):
    """Ray Train and Tune run workers in folders of their own, so what a stage hands them must not be
    relative; and the stores' keys must not depend on where the run directory is."""
    import shutil

    monkeypatch.chdir(tmp_path)
    overrides = ["world.num_passages=200", "world.num_fact_questions=8", "world.num_math_questions=8",
                 "evaluate.models=[base,distilled]"]
    config = load_config(REPO / "experiments" / "quickstart.yaml", ["run.dir=runs/here", *overrides])
    run_pipeline(config, ["world"], progress=False)
    ctx = StageContext(config, Path(config.run.dir))
    model = paths.evaluated_models(ctx)[1]
    found = [paths.world_dir(ctx), paths.index_dir(ctx), paths.generate_dir(ctx), paths.train_dir(ctx),
             Path(model.name), paths.evaluate_dir(ctx, model)]
    assert all(p.is_absolute() and p.is_relative_to(tmp_path / "runs" / "here") for p in found)
    assert "${run.dir}/index" in str(paths.generate_settings(ctx)["retrieval"]["index"])

    lookups = (paths.cot_dir, paths.generate_dir, paths.train_dir,
               lambda c: paths.evaluate_dir(c, paths.evaluated_models(c)[1]))
    before = [lookup(ctx).relative_to(ctx.run_dir) for lookup in lookups]
    shutil.move(tmp_path / "runs" / "here", tmp_path / "moved")
    moved = StageContext(load_config(REPO / "experiments" / "quickstart.yaml", [f"run.dir={tmp_path}/moved",
                                                                                 *overrides]), tmp_path / "moved")
    assert [lookup(moved).relative_to(moved.run_dir) for lookup in lookups] == before


def test_a_node_with_a_disk_of_its_own_keeps_the_run_under_its_root(tmp_path, monkeypatch):
    """A sweep trial on another node (tests/test_multinode_sweep.py): the run directory every node names, and
    everything the config made of it, moves under that node's root; without a root nothing moves."""
    config = load_config(REPO / "experiments" / "quickstart.yaml", ["run.dir=/runs/q", "index.out_dir=/runs/qx"])
    monkeypatch.delenv(paths.NODE_ROOT, raising=False)
    assert paths.on_this_node(config) is config and paths.logical_run_dir(Path("/runs/q")) == "/runs/q"

    monkeypatch.setenv(paths.NODE_ROOT, str(tmp_path / "head"))
    driver = paths.on_this_node(config)
    assert driver.run.dir == f"{tmp_path}/head/runs/q"
    assert driver.teacher_engine.options["world_dir"] == f"{tmp_path}/head/runs/q/world"  # ${run.dir}/world
    assert driver.index.out_dir == "/runs/qx"  # beside the run, not in it
    logical = paths.logical_run_dir(Path(driver.run.dir))
    assert logical == "/runs/q"

    monkeypatch.setenv(paths.NODE_ROOT, str(tmp_path / "a"))
    trial = paths.on_this_node(driver, logical)
    assert trial.run.dir == f"{tmp_path}/a/runs/q"
    assert trial.teacher_engine.options["world_dir"] == f"{tmp_path}/a/runs/q/world"
    assert trial.world == config.world and trial.train == config.train
