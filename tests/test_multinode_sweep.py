"""The 2x2 sweep (FTP x SAG) across the nodes of a multi-node Ray with no shared run directory: each node keeps
its own copy of the run (a root of its own on this machine), `run.storage` is the only place they share, and
node resources put every trial on another node. Every trial fetches the teacher data, the SAG trials the student
their sibling trained elsewhere, and the driver's report holds all four."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import seed_run
from test_generation_stages import write_config

from ray_distill.distributed.fake_cluster import processes_under, stop
from ray_distill.stages.paths import NODE_ROOT
from ray_distill.training.export import EXPORT_INFO

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRIAL_NODES = "abcd"


@pytest.fixture
def nodes(tmp_path):
    """A head (no CPUs: the driver's node) and one node per trial, each with its own root for run directories."""
    temp_dir = tempfile.mkdtemp(prefix="rdmn-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    roots = {name: tmp_path / "nodes" / name for name in ("head", *TRIAL_NODES)}
    spec = {"temp_dir": temp_dir, "head": {"num_cpus": 0, "env_vars": {NODE_ROOT: str(roots["head"])}},
            # 2 CPUs each: a trial's train worker, then its student replica and rollout worker.
            "nodes": [{"num_cpus": 2, "resources": {"trial_slot": 1}, "object_store_memory": 200_000_000,
                       "env_vars": {NODE_ROOT: str(roots[name])}} for name in TRIAL_NODES]}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cluster = subprocess.Popen([sys.executable, str(REPO / "tests" / "multinode.py"), json.dumps(spec)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = cluster.stdout.readline()
        assert line.startswith("address "), f"the multi-node Ray did not start: {line!r}"
        yield line.split()[1], roots
    finally:
        cluster.stdin.close()  # the helper shuts its cluster down
        try:
            cluster.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
        leftover = processes_under(temp_dir)
        stop(cluster, temp_dir)  # whatever is left, and the temp dir
        assert not leftover, f"Ray processes of the multi-node cluster still running: {leftover}"


def run(address: str, root: Path, config: Path) -> subprocess.CompletedProcess:
    """`ray-distill run` as a driver on the head node, which keeps its run directory under `root`."""
    return subprocess.run([str(BIN / "ray-distill"), "run", str(config)], capture_output=True, text=True,
                          env={**os.environ, "RAY_ADDRESS": address, NODE_ROOT: str(root)}, timeout=900)


def files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


def test_a_2x2_sweep_across_nodes_shares_only_run_storage(tmp_path, nodes, small_world):
    address, roots = nodes
    # The run directory as every node names it; no node keeps anything there (each has its own root).
    logical = tmp_path / "logical" / "run"
    storage = tmp_path / "storage"
    path = write_config(
        tmp_path, run={"dir": str(logical), "stages": ["world", "index", "sweep", "report"], "storage": str(storage)},
        models={"teacher": "world-oracle", "student": "tiny-random"}, student_engine={"dtype": "float32"},
        teacher_engine={"backend": "oracle", "cpus_per_replica": 0, "options": {"world_dir": f"{logical}/world"}},
        generate={"max_steps": 4},
        train={"max_length": 2048, "epochs": 1, "global_batch_size": 4, "lora_r": 8, "lora_alpha": 16,
               "cpus_per_worker": 1},
        evaluate={"limit": 1, "max_steps": 1, "max_new_tokens": 16},
        sweep={"ftp": [False, True], "sag": [1, 2], "cot_distill": False, "cot_prompt": False,
               "trial_cpus": 0, "resources": {"trial_slot": 1}, "max_concurrent_trials": 4})
    head = roots["head"] / str(logical).lstrip("/")
    seeding = yaml.safe_load(path.read_text())
    seeding["run"]["dir"] = str(head)
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(seeding))
    seed_run(small_world, seed)  # the world and index, built on the head node

    done = run(address, roots["head"], path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert not (tmp_path / "logical").exists()  # no path escaped its node's root
    trials = json.loads((head / "sweep" / "trials.json").read_text())
    assert [(t["method"], t["status"]) for t in trials] == [
        ("agent distill", "TERMINATED"), ("+FTP", "TERMINATED"), ("+SAG(N=2)", "TERMINATED"),
        ("+FTP+SAG(N=2)", "TERMINATED")]
    assert all(t["metrics"]["average"] is not None and t["metrics"]["train_steps"] >= 1 for t in trials)
    for trial in trials:  # Tune's own record of each trial, TensorBoard included, kept by the driver
        assert Path(trial["dir"]).is_relative_to(head)
        assert any(Path(trial["dir"]).glob("events.out.tfevents*")) and (Path(trial["dir"]) / "result.json").is_file()
    assert "| tiny-random" in (head / "sweep" / "trials.md").read_text()

    # One trial per node; each fetched the teacher data it trains on and evaluated there.
    on_node = {name: files(roots[name], "**/evaluate/*/*/results.json") for name in TRIAL_NODES}
    assert all(len(found) == 1 for found in on_node.values()), on_node
    for name in TRIAL_NODES:
        assert files(roots[name], "**/filter/**/trajectories.parquet"), f"node {name} has no teacher data"
    # Two students were trained, each on one node; a SAG trial's node has the same student, fetched: the
    # same bytes with the same times.
    students: dict[str, set] = {}
    for name in TRIAL_NODES:
        for info in files(roots[name], f"**/train/*/*/model/{EXPORT_INFO}"):
            copy = info.parent
            students.setdefault(copy.parent.parent.name, set()).add(
                tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(copy.iterdir())))
    assert sorted(students) == ["agent-ftp", "agent-no-ftp"]
    assert all(len(copies) == 1 for copies in students.values()), "a student was trained twice"
    assert sum(len(files(roots[name], f"**/train/*/*/model/{EXPORT_INFO}")) for name in TRIAL_NODES) == 4

    # The driver has every trial's outputs, from the storage (the students, not their checkpoints), and so does
    # the storage's index, checkpoints included.
    assert len(files(head, "evaluate/*/*/results.json")) == 4
    assert len(files(head, f"train/*/*/model/{EXPORT_INFO}")) == 2 and files(head, "train/*/*/logs/steps.jsonl")
    assert not files(head, "train/*/*/ray")
    report = (head / "report" / "report.md").read_text().splitlines()
    assert report[2] == "| student | agent distill | +FTP | +SAG(N=2) | +FTP+SAG(N=2) |"
    index = json.loads((storage / ".ray-distill-storage.json").read_text())
    assert sum(k.startswith("evaluate/") and k.endswith("/results.json") for k in index) == 4
    trained = [k.split("/model/")[0] for k in index if k.endswith(f"/model/{EXPORT_INFO}")]
    assert len(trained) == 2  # each with its checkpoints and logs, which the sibling that fetched it kept
    assert all(any(k.startswith(f"{d}/ray/") for k in index) and f"{d}/logs/steps.jsonl" in index for d in trained)

    rerun = run(address, roots["head"], path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[sweep] up to date, skipped" in rerun.stdout + rerun.stderr
