"""The Ray layer on a local Ray: engine replicas behind the router, sandbox pool actors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from ray_distill.distributed.engines import EngineRouter
from ray_distill.engines import GenerationRequest, SamplingParams


def test_router_keeps_a_session_on_one_replica_and_balances_new_ones():
    router = EngineRouter(["r0", "r1", "r2"], "m")
    assert [router.replica_for(s) for s in ("a", "b", "c")] == [0, 0, 0]  # nothing in flight: lowest index
    router.in_flight = [2, 0, 1]
    assert router.replica_for("a") == 0  # sticky
    assert router.replica_for("d") == 1  # least loaded
    router.in_flight = [0, 5, 0]
    assert router.replica_for("d") == 1 and router.replica_for("e") == 0
    assert router.replica_for(None) == 0


def test_router_forgets_the_oldest_sessions_beyond_its_bound():
    router = EngineRouter(["r0", "r1"], "m")
    router.MAX_SESSIONS = 3
    for s in "abcd":
        router.replica_for(s)
    assert list(router._sessions) == ["b", "c", "d"]
    with pytest.raises(ValueError, match="at least one replica"):
        EngineRouter([], "m")


def test_gpus_per_replica_are_its_tensor_parallel_degree():
    from ray_distill.distributed.engines import ReplicaResources, _with_tensor_parallel
    from ray_distill.engines.spec import EngineSpec

    assert _with_tensor_parallel(EngineSpec("vllm", "m"), 4).options == {"tensor_parallel_size": 4}
    assert _with_tensor_parallel(EngineSpec("hf", "m"), 1).options == {}
    with pytest.raises(ValueError, match="tensor_parallel_size=2 but 4 GPUs"):
        EngineRouter.launch(EngineSpec("vllm", "m", {"tensor_parallel_size": 2}), resources=ReplicaResources(num_gpus=4))
    with pytest.raises(ValueError, match="need the vllm backend"):
        EngineRouter.launch(EngineSpec("hf", "m"), resources=ReplicaResources(num_gpus=2))


@pytest.mark.slow
@pytest.mark.ray
def test_each_replica_gets_its_own_gpus_from_ray(tiny_model):
    """On a Ray that declares two (logical) GPUs, so this runs without any: one GPU per replica, a different one each."""
    script = f"""
import json
from ray_distill.distributed.cluster import init_ray
from ray_distill.distributed.engines import EngineRouter, ReplicaResources
from ray_distill.engines.spec import EngineSpec
init_ray(num_cpus=2, num_gpus=2)
router = EngineRouter.launch(EngineSpec("hf", {str(tiny_model)!r}), replicas=2,
                             resources=ReplicaResources(num_gpus=1, num_cpus=0.5))
print(json.dumps(router.placement))
"""
    # A Ray of its own, in its own process: the session's local Ray declares no GPUs.
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    placement = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(tuple(p["gpu_ids"]) for p in placement) == [("0",), ("1",)]


@pytest.mark.slow
def test_replicas_serve_the_engine_protocol_with_session_affinity(local_ray, tiny_model):
    from ray_distill.engines.hf import HFEngine
    from ray_distill.engines.spec import EngineSpec

    router = EngineRouter.launch(EngineSpec("hf", str(tiny_model), {"dtype": "float32"}), replicas=2)
    chat = [{"role": "user", "content": "Say something."}]

    async def go():
        requests = [GenerationRequest(chat, SamplingParams(max_new_tokens=8, temperature=0.8, seed=i), session_id=f"ep{i % 4}")
                    for i in range(8)]
        return await asyncio.gather(*(router.generate(r) for r in requests)), requests

    try:
        results, requests = asyncio.run(go())
    finally:
        asyncio.run(router.close())
    local = HFEngine(str(tiny_model), dtype="float32")
    expected = [local.generate_batch([r])[0].texts for r in requests]
    assert [r.texts for r in results] == expected  # seeded: same samples on any replica
    assignment = {s: router.replica_for(s) for s in ("ep0", "ep1", "ep2", "ep3")}
    assert set(assignment.values()) == {0, 1}  # both replicas served sessions


@pytest.mark.slow
def test_scorer_gives_the_right_verdict_in_a_ray_worker(local_ray):
    import ray

    from ray_distill.scoring import score_answer

    @ray.remote
    def score() -> bool:
        return score_answer("math", "(x+1)^2", "x^2+2x+1").correct

    assert ray.get(score.remote(), timeout=180) is True


def test_a_cluster_lock_is_held_by_one_at_a_time_and_a_dead_holders_lease_lapses(local_ray):
    import threading
    import time

    import ray

    from ray_distill.distributed.locks import cluster_lock, lock_table

    with lock_table("test-locks"):
        order = []

        def hold(name: str, seconds: float) -> None:
            with cluster_lock("test-locks", "student", ttl=2.0, poll_s=0.05):
                order.append(f"{name} in")
                time.sleep(seconds)  # longer than a lease: renewed meanwhile
                order.append(f"{name} out")

        first = threading.Thread(target=hold, args=("a", 3.0))
        first.start()
        while not order:
            time.sleep(0.05)
        hold("b", 0)
        first.join()
        assert order == ["a in", "a out", "b in", "b out"]

        # A holder that died holding the lock (it never renews, never gives back): the lease lapses.
        leases = ray.get_actor("test-locks")
        assert ray.get(leases.take.remote("student", "gone", 1.0))
        start = time.monotonic()
        with cluster_lock("test-locks", "student", poll_s=0.05):
            assert 0.8 < time.monotonic() - start < 5
        with cluster_lock("test-locks", "other"):  # other keys are free meanwhile
            pass
