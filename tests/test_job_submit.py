"""The cluster path for real: a Ray head started with `ray start --head` on loopback, a quickstart stage
submitted with `ray job submit` and cluster/runtime_env.yaml, its outputs checked, the head stopped."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no dashboard at {url} after {timeout} s")


@pytest.fixture
def ray_head():
    """A one-node Ray cluster of its own, like a cluster's head: loopback only, no token auth, 2 CPUs and
    the `cpu_node` resource of cluster/'s CPU node types. Stopped by stopping its `ray start --block`
    (a plain `ray stop` would also stop the test session's own local Ray)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1"})
    temp_dir = tempfile.mkdtemp(prefix="rdjob-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard = f"http://127.0.0.1:{_free_port()}"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}", "--num-cpus=2",
         # Not the default 52365: a local Ray of the test session (ray.init) may hold that one.
         f"--dashboard-agent-listen-port={_free_port()}",
         '--resources={"cpu_node": 1}', f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_dashboard(dashboard, head)
        yield dashboard, env
    finally:
        head.terminate()
        try:
            head.wait(timeout=90)
        finally:
            head.kill()
        leftover = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.split()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes of the head still running: {leftover}"


@pytest.mark.slow
@pytest.mark.ray
def test_a_stage_submitted_with_ray_job_submit_runs_on_the_cluster(ray_head, tmp_path):
    dashboard, env = ray_head
    run_dir = tmp_path / "run"
    # Every actor and task asks for the CPU node type's resource, as experiments/paper/ does.
    placed = [f"{s}.resources={{cpu_node: 0.1}}" for s in ("index", "teacher_engine", "rollout", "retrieval")]
    overrides = [f"run.dir={run_dir}", "run.stages=[world,index,cot,generate]", "world.num_passages=300",
                 "world.num_fact_questions=20", "world.num_math_questions=20", "index.passages_per_shard=300",
                 "questions.limit=2", *placed]
    for attempt in range(30):
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--submission-id", "quickstart-index",
             "--runtime-env", "cluster/runtime_env.yaml", "--", "ray-distill", "run", "experiments/quickstart.yaml",
             *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in submit.stderr:
            break
        time.sleep(2)  # the head's job agent registers a few seconds after the dashboard answers
    assert submit.returncode == 0, submit.stdout[-5000:] + submit.stderr[-5000:]
    from ray.job_submission import JobStatus, JobSubmissionClient

    assert JobSubmissionClient(dashboard).get_job_status("quickstart-index") == JobStatus.SUCCEEDED

    logs = submit.stdout + submit.stderr
    assert "joined the Ray cluster at 127.0.0.1:" in logs  # not a Ray of its own inside the job
    assert "'cpu_node': 1.0" in logs
    assert f"[index] outputs: {run_dir / 'index'}" in logs
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["world", "index", "cot", "generate"]
    assert manifest["stages"]["index"]["summary"]["passages"] == 300
    assert (run_dir / "index" / "shard-00000" / "manifest.json").is_file()
    # The actors asked for the node type's resource (on a cluster nothing checks it beforehand).
    from ray.util.state import list_actors

    asked = {a.class_name: a.required_resources for a in list_actors(address=dashboard, detail=True, limit=1000)}
    for role in ("EngineReplica", "ShardActor", "RetrievalRouter", "MapWorker(MapBatches(RolloutWorker))",
                 "MapWorker(MapBatches(_EncodeBatch))"):
        assert asked[role].get("cpu_node") == 0.1, (role, asked)
    generated = manifest["stages"]["generate"]["summary"]
    assert (generated["stored"], generated["unfinished"]) == (4, 0), generated  # 2 questions of each training set
