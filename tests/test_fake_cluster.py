"""cluster/aws.yaml's node types run for real under Ray's autoscaler (its fake multi-node provider: a raylet per
node it launches, on this machine): stages submitted with `ray job submit` scale up the node type of the roles
they start and no other, the train stage's workers run as GPU workers on logical GPUs over gloo, idle nodes go,
and a demand that no node type can hold fails within a minute, naming the role."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ray_distill.distributed.fake_cluster import FakeCluster, fake_cluster, processes_under

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IDLE_TIMEOUT_S = 15  # fake_config's idle_timeout_minutes=0.25


@pytest.fixture(scope="module")
def cluster():
    with fake_cluster(REPO / "cluster" / "aws.yaml", idle_timeout_minutes=IDLE_TIMEOUT_S / 60) as running:
        yield running
    assert not processes_under(running.temp_dir), "a fake node outlived the cluster"


class NodeWatch:
    """The most nodes of each type the autoscaler had up or launching at once while the block ran."""

    def __init__(self, cluster: FakeCluster):
        self.cluster, self.most, self._done = cluster, Counter(), threading.Event()

    def __enter__(self) -> Counter:
        def poll() -> None:
            while not self._done.wait(1):
                report = self.cluster.status().get("autoscaler_report", {})
                now = Counter(report.get("active_nodes", {})) + Counter(report.get("pending_launches", {}))
                now.update(node_type for _, node_type, _ in report.get("pending_nodes", []))
                for node_type, count in now.items():
                    self.most[node_type] = max(self.most[node_type], count)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self.most

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def nodes(cluster: FakeCluster, alive: bool = False) -> dict[str, dict[str, float]]:
    """node id -> its resources, for every node the cluster has had (`alive`: has now)."""
    from ray.util.state import list_nodes

    return {n.node_id: n.resources_total for n in list_nodes(address=cluster.dashboard, detail=True, limit=1000)
            if n.state == "ALIVE" or not alive}


def wait_until_only_the_head(cluster: FakeCluster) -> float:
    """Seconds until every worker node has gone (the idle timeout, a drain, the kill)."""
    start = time.monotonic()
    while time.monotonic() - start < IDLE_TIMEOUT_S + 45:
        if len(nodes(cluster, alive=True)) == 1:
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"nodes still up {IDLE_TIMEOUT_S + 45} s after the work: {nodes(cluster, alive=True)}")


def submit(cluster: FakeCluster, job_id: str, *args: str, wait: bool = True) -> subprocess.CompletedProcess:
    for _ in range(30):
        done = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id,
             "--runtime-env", "cluster/runtime_env.yaml", *([] if wait else ["--no-wait"]), "--", "ray-distill",
             *args], cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=900)
        if "No available agent to submit job" not in done.stderr:
            return done
        time.sleep(2)  # the head's job agent registers a few seconds after the dashboard answers
    return done


def actors(cluster: FakeCluster) -> list:
    from ray.util.state import list_actors

    return list_actors(address=cluster.dashboard, detail=True, limit=1000)


@pytest.mark.deepspeed
def test_stages_scale_up_the_node_types_their_roles_ask_for_and_idle_nodes_go(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard)
    run_dir = tmp_path / "run"
    # The CPU roles ask for the CPU node type's resource, as experiments/paper/ does.
    placed = [f"{s}.resources={{cpu_node: 0.1}}" for s in ("index", "teacher_engine", "rollout", "retrieval")]
    common = [f"run.dir={run_dir}", "world.num_passages=300", "world.num_fact_questions=20",
              "world.num_math_questions=20", "index.passages_per_shard=300", "questions.limit=2", *placed]

    with NodeWatch(cluster) as most:
        generated = submit(cluster, "generate", "run", "experiments/quickstart.yaml",
                           "run.stages=[world,index,cot,generate]", *common)
    started = {a.class_name: (a.required_resources, a.node_id) for a in actors(cluster)}
    ran_on = nodes(cluster)
    assert generated.returncode == 0, generated.stdout[-5000:] + generated.stderr[-5000:]
    assert jobs.get_job_status("generate") == JobStatus.SUCCEEDED
    logs = generated.stdout + generated.stderr
    assert "joined the Ray cluster at 127.0.0.1:" in logs  # not a Ray of its own inside the job
    assert most["cpu_r6i"] >= 1 and most["gpu_a100x8"] == 0, most
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["index"]["summary"]["passages"] == 300
    assert (manifest["stages"]["generate"]["summary"]["stored"], manifest["stages"]["generate"]["summary"]["unfinished"]) == (4, 0)
    for role in ("EngineReplica", "ShardActor", "RetrievalRouter", "MapWorker(MapBatches(RolloutWorker))",
                 "MapWorker(MapBatches(_EncodeBatch))"):
        asked, node = started[role]
        assert asked.get("cpu_node") == 0.1, (role, asked)
        assert ran_on[node].get("cpu_node") == 1 and "GPU" not in ran_on[node], (role, ran_on[node])
    scale_down = wait_until_only_the_head(cluster)

    student = ["models.student=tiny-random", "train.max_length=2048", "train.global_batch_size=2", "train.lr=1e-3",
               "train.lora=false", "train.zero_stage=2"]
    with NodeWatch(cluster) as most:
        trained = submit(cluster, "train", "run", "experiments/quickstart.yaml", "run.stages=[filter,train]", *common,
                         *student, "train.gpus_per_worker=1", "train.cpus_per_worker=1")
    workers = [a for a in actors(cluster) if a.class_name == "RayTrainWorker"]
    ran_on = nodes(cluster)
    assert trained.returncode == 0, trained.stdout[-5000:] + trained.stderr[-5000:]
    assert most["gpu_a100x8"] >= 1, most
    # In a placement group a bundle's resources are renamed, GPU to GPU_group_<index>_<group id>.
    asked = [{k.split("_group_")[0]: v for k, v in w.required_resources.items()} for w in workers]
    assert workers and all(a.get("GPU") == 1 for a in asked), asked
    assert all(ran_on[w.node_id].get("GPU") == 1 for w in workers)
    summary = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]["summary"]
    # Scheduled as a GPU worker on a node with a (logical) GPU, computing on CPU over gloo: NCCL would fail.
    assert (summary["backend"], summary["gpu_ids"]) == ("gloo", ["0"]), summary
    assert summary["steps"] == summary["total_steps"] >= 1 and Path(summary["model"]).is_dir()
    print(f"scale-down after generate: {scale_down:.0f} s; after train: {wait_until_only_the_head(cluster):.0f} s")


def test_a_demand_no_node_type_can_hold_fails_within_a_minute_naming_the_role(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from test_training_stage import trajectories

    from ray_distill.config import load_config
    from ray_distill.fileio import write_parquet_atomic
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.paths import train_source

    overrides = [f"run.dir={tmp_path / 'run'}", "run.stages=[train]", "models.student=tiny-random",
                 "train.max_length=400", "train.gpus_per_worker=1", "train.cpus_per_worker=1",
                 "train.resources={tpu_v9: 1}"]
    config = load_config(REPO / "experiments" / "quickstart.yaml", overrides)
    source = train_source(StageContext(config, Path(config.run.dir)))
    source.parent.mkdir(parents=True)
    write_parquet_atomic(trajectories(4), source)
    jobs = JobSubmissionClient(cluster.dashboard)
    start = time.monotonic()
    submitted = submit(cluster, "nowhere", "run", "experiments/quickstart.yaml", *overrides, wait=False)
    assert submitted.returncode == 0, submitted.stderr
    while jobs.get_job_status("nowhere") not in (JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.STOPPED):
        assert time.monotonic() - start < 60, "still waiting for a node type that does not exist:\n" + jobs.get_job_logs("nowhere")[-4000:]
        time.sleep(1)
    assert jobs.get_job_status("nowhere") == JobStatus.FAILED
    logs = jobs.get_job_logs("nowhere")
    assert "no node type of this cluster can hold a train worker: it asks for {CPU: 1, GPU: 1, tpu_v9: 1}" in logs
    print(f"failed after {time.monotonic() - start:.0f} s")
