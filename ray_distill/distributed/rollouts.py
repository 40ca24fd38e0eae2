"""Rollouts as a Ray Data pipeline: work items -> an actor pool of rollout workers -> outcomes.

Each rollout worker is an async Ray Data UDF that keeps up to
`episodes_in_flight` rollouts running on its event loop. Engine calls go
to the shared engine replicas (whose batching is where concurrency pays),
code runs in the worker's own warm sandboxes, and `web_search` goes to the
retrieval service (or an HTTP endpoint). Outcomes travel back as JSON text
in one column, so Ray Data never has to infer a schema for nested records;
the driver stores them as they arrive (`generation/store.py`), which is
also where a batch delivered twice by a retried task is deduplicated.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import ray

from ray_distill.agent import Agent, AgentConfig, retrieval_tools
from ray_distill.distributed.engines import EngineRouter
from ray_distill.distributed.retrieval import RetrievalClient
from ray_distill.engines.protocol import SamplingParams
from ray_distill.failpoints import kill_point
from ray_distill.generation.records import RolloutItem
from ray_distill.generation.rollout import CotRollout, EpisodeRollout, Failure, Outcome, Scoring
from ray_distill.tools.retrieval.http import HttpRetriever
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool

# Tasks (each one block, given to the UDF as one batch) running at once per
# worker. A batch returns when its slowest item does, so a worker holds
# more items than it runs: while one batch waits on a straggler, the next
# batch's items take the freed slots.
TASKS_PER_WORKER = 3


@dataclass(frozen=True)
class RolloutSpec:
    """Everything a rollout worker needs to build its rollout, picklable."""

    kind: str  # "cot" or "agent"
    engine_replicas: Sequence  # EngineReplica handles
    model: str
    sampling: Optional[SamplingParams] = None  # cot
    agent: Optional[AgentConfig] = None  # agent (its own sampling settings)
    retrieval_routers: Sequence = ()  # RetrievalRouter handles (agent), or:
    retrieval_url: Optional[str] = None  # a Search-R1 endpoint
    topk: int = 3
    sandbox_policy: SandboxPolicy = SandboxPolicy()
    warm_sandboxes: int = 4
    scoring: Scoring = Scoring()
    max_attempts: int = 3
    episodes_in_flight: int = 16


class RolloutWorker:
    """A Ray Data UDF (async): a batch of items in, their outcomes (JSON) out."""

    def __init__(self, spec: RolloutSpec):
        self.spec = spec
        self._rollout = None
        self._gate: Optional[asyncio.Semaphore] = None
        self._pool: Optional[SandboxPool] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __del__(self) -> None:
        # Ray Data drops a finished pipeline's UDFs (a killed actor skips this; the sandboxes then
        # exit when their pipes close, and the next session start removes their leftovers).
        if self._pool is not None and self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._pool.close(), self._loop).result(timeout=30)
            except Exception:
                pass

    async def _ready(self):
        # Built on first use: the sandbox pool and the semaphore belong to Ray Data's UDF event loop.
        if self._rollout is None:
            spec = self.spec
            engine = EngineRouter(list(spec.engine_replicas), spec.model)
            self._gate = asyncio.Semaphore(spec.episodes_in_flight)
            if spec.kind == "cot":
                self._rollout = CotRollout(engine, spec.sampling, spec.scoring, spec.max_attempts)
            else:
                self._loop = asyncio.get_running_loop()
                self._pool = SandboxPool(spec.sandbox_policy, retrieval_tools(self._retriever(), spec.topk),
                                         size=spec.warm_sandboxes)
                await self._pool.__aenter__()
                self._rollout = EpisodeRollout(Agent(engine, spec.agent), self._pool, spec.scoring, spec.max_attempts)
        return self._rollout

    def _retriever(self):
        if self.spec.retrieval_url:
            return HttpRetriever(self.spec.retrieval_url)
        return RetrievalClient(list(self.spec.retrieval_routers))

    async def __call__(self, batch: dict) -> dict:
        rollout = await self._ready()

        async def one(text: str) -> list[Outcome]:
            item = RolloutItem.from_json(text)
            async with self._gate:
                try:
                    outcomes = await rollout(item)
                except Exception as e:  # a bug on one item must not fail its batch (and the dataset)
                    return [Failure(item.key, 0, f"{type(e).__name__}: {e}")]
                kill_point("rollout.item")
                return outcomes

        results = await asyncio.gather(*(one(str(text)) for text in batch["item"]))
        return {"outcome": [encode(o) for outcomes in results for o in outcomes]}


def encode(outcome: Outcome) -> str:
    if isinstance(outcome, Failure):
        return json.dumps({"failure": {"key": list(outcome.key), "attempt": outcome.attempt, "error": outcome.error}})
    return json.dumps({"record": outcome}, ensure_ascii=False)


def decode(text: str) -> Outcome:
    payload = json.loads(text)
    if "failure" in payload:
        f = payload["failure"]
        return Failure(tuple(f["key"]), f["attempt"], f["error"])
    return payload["record"]


def stream_outcomes(items: Sequence[RolloutItem], spec: RolloutSpec, workers: int = 1,
                    worker_cpus: float = 0.0, resources: Optional[dict[str, float]] = None) -> Iterator[Outcome]:
    """Run every item through a pool of `workers` rollout workers; yields outcomes as they arrive."""
    if not items:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the stage shows one bar of its own, with episodes/s and tokens/s
    # Half a worker's slots per batch: TASKS_PER_WORKER batches keep it full through stragglers.
    batch = max(1, math.ceil(spec.episodes_in_flight / 2))
    dataset = ray.data.from_items([{"item": item.to_json()} for item in items],
                                  override_num_blocks=math.ceil(len(items) / batch))
    outcomes = dataset.map_batches(
        RolloutWorker,
        fn_constructor_args=(spec,),
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=TASKS_PER_WORKER,
                                           max_concurrent_calls_per_actor=TASKS_PER_WORKER),
        num_cpus=worker_cpus,
        resources=resources or None,
    )
    for batch in outcomes.iter_batches(batch_size=None, batch_format="pyarrow"):
        for text in batch.column("outcome").to_pylist():
            yield decode(text)
