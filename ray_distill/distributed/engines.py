"""Engine replicas as Ray actors, behind a router that implements `Engine`.

Each replica builds its engine from an EngineSpec on its own node (GPUs per
replica from config; a placement group of one bundle per GPU when the
engine is tensor parallel, which vLLM's Ray executor then fills). The router
sends all requests of one episode (one `session_id`) to the same replica, so
that replica's prefix cache holds the episode's growing prompt; a new
session goes to the replica with the fewest requests in flight. A replica
that dies is restarted and its requests in flight are sent again: a request
carries its seed, so generating is safe to repeat.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Optional

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ray_distill.distributed.cluster import OWN_PLACEMENT
from ray_distill.distributed.resources import replica_bundles
from ray_distill.engines.protocol import Completion, GenerationRequest
from ray_distill.engines.spec import EngineSpec
from ray_distill.failpoints import kill_point

REPLICA_RESTARTS = 3


@ray.remote(max_restarts=REPLICA_RESTARTS, max_task_retries=REPLICA_RESTARTS)
class EngineReplica:
    def __init__(self, spec: EngineSpec):
        self.engine = spec.build()

    async def generate(self, request: GenerationRequest) -> Completion:
        kill_point("engine.generate")
        return await self.engine.generate(request)

    async def close(self) -> None:
        await self.engine.close()

    async def ready(self) -> dict:
        """Where the replica landed: for logs, and for checking placement."""
        context = ray.get_runtime_context()
        group = ray.util.get_current_placement_group()
        return {"model": self.engine.model, "node_id": context.get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "placement_group": group.id.hex() if group else None}


@dataclass(frozen=True)
class ReplicaResources:
    num_gpus: int = 0  # per replica; > 1 means tensor parallel over a placement group
    num_cpus: float = 1.0
    custom: tuple[tuple[str, float], ...] = ()  # custom Ray resources (per GPU bundle above one GPU)


class EngineRouter:
    """Client side of a group of replicas; usable wherever an Engine is."""

    MAX_SESSIONS = 100_000  # remembered session -> replica assignments (LRU)

    def __init__(self, replicas: list, model: str, placement_groups: Optional[list] = None):
        if not replicas:
            raise ValueError("an engine router needs at least one replica")
        self.replicas = replicas
        self.model = model
        self.placement_groups = placement_groups or []
        self.placement: list[dict] = []  # each replica's ready() report, once launched
        self.in_flight = [0] * len(replicas)
        self._sessions: OrderedDict[str, int] = OrderedDict()

    @classmethod
    def launch(cls, spec: EngineSpec, replicas: int = 1, resources: ReplicaResources = ReplicaResources()) -> "EngineRouter":
        spec = _with_tensor_parallel(spec, resources.num_gpus)
        handles, groups = [], []
        for _ in range(replicas):
            if resources.num_gpus > 1:
                group = placement_group(replica_bundles(resources.num_gpus, resources.num_cpus,
                                                        dict(resources.custom)), strategy="STRICT_PACK")
                groups.append(group)
                strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
                handle = EngineReplica.options(num_cpus=0, num_gpus=0, scheduling_strategy=strategy).remote(spec)
            else:
                handle = EngineReplica.options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                               resources=dict(resources.custom), **OWN_PLACEMENT).remote(spec)
            handles.append(handle)
        router = cls(handles, spec.model, groups)
        router.placement = ray.get([h.ready.remote() for h in handles])
        return router

    def replica_for(self, session_id: Optional[str]) -> int:
        if session_id is not None and session_id in self._sessions:
            self._sessions.move_to_end(session_id)
            return self._sessions[session_id]
        index = min(range(len(self.replicas)), key=lambda i: (self.in_flight[i], i))
        if session_id is not None:
            self._sessions[session_id] = index
            if len(self._sessions) > self.MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return index

    async def generate(self, request: GenerationRequest) -> Completion:
        index = self.replica_for(request.session_id)
        self.in_flight[index] += 1
        try:
            return await self.replicas[index].generate.remote(request)
        finally:
            self.in_flight[index] -= 1

    async def close(self) -> None:
        # Let each engine stop its own work first (a killed actor leaves its scheduler task dangling).
        try:
            await asyncio.wait_for(asyncio.gather(*(h.close.remote() for h in self.replicas), return_exceptions=True), 30)
        except asyncio.TimeoutError:
            pass
        for handle in self.replicas:
            ray.kill(handle)
        for group in self.placement_groups:
            ray.util.remove_placement_group(group)


def _with_tensor_parallel(spec: EngineSpec, num_gpus: int) -> EngineSpec:
    """A replica's GPUs are its tensor-parallel degree: set it, or check that the spec agrees."""
    if num_gpus <= 1:
        return spec
    if spec.backend != "vllm":
        raise ValueError(f"a replica of the {spec.backend} engine uses one GPU; "
                         f"{num_gpus} GPUs per replica (tensor parallelism) need the vllm backend")
    degree = spec.options.get("tensor_parallel_size", num_gpus)
    if degree != num_gpus:
        raise ValueError(f"tensor_parallel_size={degree} but {num_gpus} GPUs per replica; make them equal")
    return replace(spec, options={**spec.options, "tensor_parallel_size": num_gpus})
