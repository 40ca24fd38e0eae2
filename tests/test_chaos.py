"""Chaos: SIGKILL one component mid-stage, at a deterministic point, then check the outputs.

Each test runs a stage as a user does (`ray-distill STAGE CONFIG`, its own local Ray) with one
kill point armed (`ray_distill/failpoints.py`): an engine replica, a rollout worker, a sandbox
worker, a retrieval shard, a train worker or the job driver dies on its n-th pass. Nothing may
be lost or doubled: every record key exactly once, every answer a real one (the world oracle
teacher solves every question, so an infrastructure failure passed off as an answer shows up
as a wrong one), and training on exactly the batches an uninterrupted run draws.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_distill.config import load_config
from ray_distill.failpoints import ARM, MARKERS
from ray_distill.stages.base import StageContext

from conftest import REPO, seed_run
from test_generation_stages import QUESTIONS_PER_SET, expected_keys, keys, write_config

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def cli(tmp_path: Path, *args: str, kill_at: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray-distill ARGS` with `kill_at` armed; it starts (and takes down) its own local Ray."""
    kills = tmp_path / "kills"
    kills.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", ARM: kill_at, MARKERS: str(kills)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "ray_distill.cli", "-q", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fired(tmp_path: Path, point: str) -> bool:
    return (tmp_path / "kills" / point).is_file()


def oracle_config(tmp_path: Path, **sections) -> Path:
    """Generation by the world oracle teacher over real sandboxes and a sharded retrieval service."""
    return write_config(
        tmp_path, models={"teacher": "world-oracle"},
        teacher_engine={"backend": "oracle", "cpus_per_replica": 0, "options": {"world_dir": str(tmp_path / "run/world")}},
        generate={"max_steps": 4, "ftp": False}, **sections)


def generate(tmp_path: Path, world: Path, kill_at: str) -> tuple[subprocess.CompletedProcess, StageContext]:
    """`ray-distill generate` with `kill_at` armed, on a copy of the session's world and index (`world`)."""
    path = oracle_config(tmp_path)
    seed_run(world, path)
    return cli(tmp_path, "generate", str(path), kill_at=kill_at), StageContext(load_config(path), tmp_path / "run")


def check_generated(ctx: StageContext) -> list[dict]:
    """Every item once, each a real, correct answer; returns the records."""
    from ray_distill.generation.store import read_records
    from ray_distill.stages.paths import generate_dir

    table = read_records(generate_dir(ctx))
    assert Counter(keys(table)) == Counter(expected_keys())
    rows = table.to_pylist()
    assert all(row["correct"] and row["answered_by"] == "final_answer" for row in rows), \
        [(row["example_id"], row["final_answer"]) for row in rows if not row["correct"]]
    return rows


def failures(ctx: StageContext) -> list[dict]:
    from ray_distill.fileio import read_jsonl
    from ray_distill.stages.paths import generate_dir

    return list(read_jsonl(generate_dir(ctx) / "failures.jsonl"))


@pytest.mark.parametrize("point", ["engine.generate@3", "rollout.item@2", "retrieval.search@2"])
def test_a_killed_component_is_restarted_and_its_work_redone_within_the_run(tmp_path, small_world, point):
    """Ray restarts an engine replica, a rollout worker or a retrieval shard, and resends what it held:
    generating, an episode batch and a search are all safe to repeat."""
    done, ctx = generate(tmp_path, small_world, point)
    assert done.returncode == 0, done.stderr[-3000:]
    assert fired(tmp_path, point.split("@")[0])
    check_generated(ctx)
    assert failures(ctx) == []  # retried below the episodes: no attempt was lost


def test_a_killed_sandbox_fails_its_attempt_and_the_episode_is_tried_again(tmp_path, small_world):
    done, ctx = generate(tmp_path, small_world, "sandbox.step@3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert fired(tmp_path, "sandbox.step")
    rows = check_generated(ctx)
    [failure] = failures(ctx)
    assert failure["error"].startswith("sandbox:") and failure["attempt"] == 1
    retried = [row for row in rows if row["example_id"] == failure["example_id"]]
    assert [row["attempt"] for row in retried] == [2]
    assert all(row["attempt"] == 1 for row in rows if row["example_id"] != failure["example_id"])


def test_a_killed_driver_loses_only_unflushed_records_and_a_rerun_finishes_exactly_once(tmp_path, small_world):
    from ray_distill.generation.store import read_records
    from ray_distill.stages.paths import generate_dir

    killed, ctx = generate(tmp_path, small_world, "driver.record@3")
    assert killed.returncode == -9 and fired(tmp_path, "driver.record")
    before = read_records(generate_dir(ctx))
    assert 2 <= before.num_rows < 2 * QUESTIONS_PER_SET  # stored one by one (flush_every=1) up to the kill

    rerun = cli(tmp_path, "generate", str(tmp_path / "config.yaml"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_generated(ctx)
    after = read_records(generate_dir(ctx))
    kept = dict(zip(keys(after), after.column("created_at").to_pylist()))
    assert all(kept[k] == t for k, t in zip(keys(before), before.column("created_at").to_pylist()))  # not redone


@pytest.mark.deepspeed
def test_a_killed_train_worker_resumes_from_its_checkpoint_on_the_same_batches(tmp_path):
    from test_training_stage import trajectories

    from ray_distill.fileio import write_parquet_atomic
    from ray_distill.stages.paths import filter_dir
    from ray_distill.stages.paths import train_dir
    from ray_distill.training.data_order import global_batches, shuffled

    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "run": {"name": "chaos", "dir": str(tmp_path / "run"), "stages": ["train"]},
        "models": {"student": "tiny-random"},
        "train": {"max_length": 400, "epochs": 2, "global_batch_size": 4, "lr": 2e-3, "lora_r": 8, "lora_alpha": 16,
                  "checkpoint_every": 2, "workers": 2, "cpus_per_worker": 0.5, "zero_stage": 2}}))
    config = load_config(path)
    ctx = StageContext(config, tmp_path / "run")
    filter_dir(ctx).mkdir(parents=True)
    write_parquet_atomic(trajectories(12), filter_dir(ctx) / "trajectories.parquet")

    # Step 3 is logged, then a worker dies before step 4's checkpoint: Ray Train restarts the
    # workers from step 2's, and step 3 must be trained (and logged) again, on the same batch.
    done = cli(tmp_path, "train", str(path), kill_at="train.step@3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert fired(tmp_path, "train.step")
    log = [json.loads(line) for line in (train_dir(ctx) / "logs" / "steps.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 7))

    [sequences] = train_dir(ctx).rglob("sequences.parquet")
    rows = pq.read_table(sequences).to_pylist()
    train = config.train
    planned = [[key for row in batch for key in row["keys"]] for epoch in range(train.epochs)
               for batch in global_batches(shuffled(rows, train.seed, epoch, train.shuffle_buffer),
                                           train.global_batch_size)]
    assert [entry["keys"] for entry in log] == planned
