"""What the `cot` and `generate` stages share: their work items, the teacher's engine replicas,
the retrieval service, and running items through the Ray Data rollout pipeline into a store."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from ray_distill.config import EngineConfig
from ray_distill.data.benchmarks import default_data_dir
from ray_distill.data.datasets import domain_of, load_examples
from ray_distill.errors import UserError
from ray_distill.generation.records import RolloutItem
from ray_distill.stages.base import StageContext
from ray_distill.stages.world import world_dir

log = logging.getLogger(__name__)


def train_items(ctx: StageContext, samples: int, seed: int,
                temperature: Callable[[str], Optional[float]] = lambda name: None,
                prefix: Callable[[str, str], Optional[str]] = lambda dataset, example_id: None) -> list[RolloutItem]:
    """One item per (training question, sample): sample i is seeded with seed + i."""
    config = ctx.config
    items = []
    for name in config.questions.train:
        domain = domain_of(name)
        examples = load_examples(name, world_dir(ctx), default_data_dir(config.benchmarks.data_dir),
                                 config.benchmarks.files, config.questions.limit)
        for example in examples:
            aliases = tuple(a for a in example.metadata.get("aliases", ()) if a != example.answer)
            for sample in range(samples):
                items.append(RolloutItem(name, example.id, sample, domain, example.question, example.answer,
                                         aliases, seed=seed + sample, ftp_prefix=prefix(name, example.id),
                                         temperature=temperature(name)))
    return items


def source_settings(ctx: StageContext) -> dict[str, Any]:
    """What shapes a generation store's records besides the stage's own settings: the question
    files (by content) and how the teacher is served (backend, dtype, options; not its replicas).
    Adding a question set or editing its file therefore starts a new store."""
    from ray_distill.data.datasets import file_digest, set_file

    c = ctx.config
    files = {name: file_digest(set_file(name, world_dir(ctx), default_data_dir(c.benchmarks.data_dir),
                                        c.benchmarks.files)) for name in c.questions.train}
    return {"questions": files, "engine": repr(engine_spec(c.teacher_engine, c.models.teacher))}


def engine_spec(engine: EngineConfig, model: str):
    from ray_distill.engines.spec import EngineSpec

    if engine.backend == "vllm":
        options = {"max_model_len": engine.max_model_len, "dtype": engine.dtype or "auto"}
    elif engine.backend == "oracle":
        options = {}
    else:
        options = {"dtype": engine.dtype}
    return EngineSpec(engine.backend, model, {**options, **engine.options})


def engine_replicas(ctx: StageContext, engine: EngineConfig, model: str):
    """The model's replicas (an EngineRouter), started once per pipeline run."""
    from ray_distill.distributed.cluster import init_ray
    from ray_distill.distributed.engines import EngineRouter, ReplicaResources

    init_ray()
    spec = engine_spec(engine, model)
    resources = ReplicaResources(num_gpus=engine.gpus_per_replica, num_cpus=engine.cpus_per_replica)

    def start():
        log.info("starting %d replica(s) of %s (%s backend)", engine.replicas, model, engine.backend)
        router = EngineRouter.launch(spec, engine.replicas, resources)
        log.info("engine replicas placed: %s", router.placement)
        return router

    return ctx.services.get(("engine", repr(spec), engine.replicas, resources), start, _close_router)


def _close_router(router) -> None:
    import asyncio

    asyncio.run(router.close())


def check_capacity(ctx: StageContext, with_retrieval: bool) -> None:
    """Fail early, naming each setting, when the stage's actors cannot fit a locally started Ray."""
    from ray_distill.distributed.cluster import require_resources

    c = ctx.config
    e, r, q = c.teacher_engine, c.rollout, c.retrieval
    # A tensor-parallel replica reserves its CPUs once per GPU (one placement group bundle each).
    plan = {"teacher_engine.replicas x cpus_per_replica (x gpus_per_replica above 1)":
            (e.replicas * e.cpus_per_replica * max(1, e.gpus_per_replica), e.replicas * e.gpus_per_replica),
            "rollout.workers x worker_cpus": (r.workers * r.worker_cpus, 0.0)}
    if with_retrieval and not q.url:
        from ray_distill.stages.index import index_dir, shard_dirs

        shards = len(shard_dirs(index_dir(ctx)))
        plan["retrieval.replicas x (router_cpus + shards x shard_cpus)"] = (
            q.replicas * (q.router_cpus + shards * q.shard_cpus), q.replicas * shards * q.shard_gpus)
    require_resources(plan)


def retrieval_for_agents(ctx: StageContext) -> dict[str, Any]:
    """How rollout workers reach web_search: retrieval.url, else the index stage's shards as a Ray service."""
    from ray_distill.stages.index import index_built, index_dir, index_kind, shard_dirs

    r = ctx.config.retrieval
    if r.url:
        return {"retrieval_url": r.url}
    if not index_built(ctx):
        raise UserError(f"the agent's web_search needs a retrieval index: no built index at {index_dir(ctx)}; "
                        "run `ray-distill index CONFIG` or set retrieval.url")

    def start():
        from ray_distill.distributed.retrieval import RetrievalClient
        from ray_distill.models import resolve_embedder

        return RetrievalClient.launch(shard_dirs(index_dir(ctx)), resolve_embedder(ctx.config.models.embedder).name,
                                      replicas=r.replicas, router_options={"num_cpus": r.router_cpus},
                                      cache_size=r.cache_size,
                                      shard_options={"num_cpus": r.shard_cpus, "num_gpus": r.shard_gpus},
                                      search=index_kind(ctx))

    client = ctx.services.get(("retrieval", str(index_dir(ctx))), start, lambda c: c.close())
    return {"retrieval_routers": tuple(client.routers)}


def retrieval_settings(ctx: StageContext) -> dict[str, Any]:
    """What decides the passages web_search returns (part of a trajectory store's settings)."""
    from ray_distill.stages.index import index_dir

    c = ctx.config
    if c.retrieval.url:
        return {"url": c.retrieval.url, "topk": c.retrieval.topk}
    return {"index": str(index_dir(ctx)), "kind": c.index.kind, "embedder": c.models.embedder, "topk": c.retrieval.topk}


def run_rollouts(ctx: StageContext, items: list[RolloutItem], store, spec_fields: dict[str, Any], desc: str):
    """Run the store's missing items through the rollout workers (agents also get web_search);
    returns the run counts. Services start only if some item is missing."""
    from ray_distill.distributed.rollouts import RolloutSpec, stream_outcomes
    from ray_distill.generation.driver import run_items
    from ray_distill.generation.rollout import Scoring

    r = ctx.config.rollout
    s = ctx.config.scoring
    spec_fields = {"scoring": Scoring(s.rel_tol, s.math_timeout), "max_attempts": r.max_attempts,
                   "episodes_in_flight": r.episodes_in_flight, "warm_sandboxes": r.warm_sandboxes,
                   "topk": ctx.config.retrieval.topk, **spec_fields}

    def stream(todo):
        agents = spec_fields["kind"] == "agent"
        check_capacity(ctx, with_retrieval=agents)
        retrieval = retrieval_for_agents(ctx) if agents else {}
        engine = engine_replicas(ctx, ctx.config.teacher_engine, ctx.config.models.teacher)
        spec = RolloutSpec(engine_replicas=tuple(engine.replicas), model=engine.model, **spec_fields, **retrieval)
        return stream_outcomes(todo, spec, workers=r.workers, worker_cpus=r.worker_cpus)

    return run_items(items, store, stream, progress=ctx.progress, desc=desc)


def store_summary(store, run: dict[str, Any]) -> dict[str, Any]:
    """The stage summary: where the records are, this run's counts, accuracy per set, failed tries by kind."""
    from collections import Counter

    from ray_distill.generation.driver import SUMMARY_COLUMNS, error_kind, summarize

    columns = [c for c in SUMMARY_COLUMNS if c in store.schema.names]
    failures = Counter(error_kind(f["error"]) for f in store.failures())
    return {"dir": str(store.directory), "records": len(store), **run, "by_set": summarize(store.read(columns)),
            "failed_tries_by_kind": dict(failures)}

