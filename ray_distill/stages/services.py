"""The services the generation stages run on: engine replicas, the retrieval service, the rollout
workers, and the judge. Each starts once per pipeline run (`ctx.services`) and only when some item
is missing; before starting, what the stage's roles reserve is checked against a Ray this process
started (`distributed/resources.py`)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from ray_distill.distributed import resources
from ray_distill.distributed.cluster import init_ray, require_resources
from ray_distill.distributed.engines import EngineRouter, ReplicaResources
from ray_distill.distributed.retrieval import RetrievalClient
from ray_distill.distributed.rollouts import RolloutSpec, stream_outcomes
from ray_distill.errors import ConfigError, UserError
from ray_distill.generation.driver import SUMMARY_COLUMNS, error_kind, run_items, summarize
from ray_distill.generation.records import RolloutItem
from ray_distill.generation.rollout import Scoring
from ray_distill.models import resolve_embedder
from ray_distill.scoring.judge import Judge, fact_asks, judge_rows
from ray_distill.stages.base import StageContext
from ray_distill.stages.paths import index_dir, shard_dirs
from ray_distill.tools.retrieval import Encoder, Retriever, ShardedRetriever
from ray_distill.tools.retrieval.http import HttpRetriever
from ray_distill.tools.retrieval.kinds import IndexKind
from ray_distill.tools.retrieval.shards import MANIFEST, ShardManifest
from ray_distill.tools.sandbox import SandboxPolicy

log = logging.getLogger(__name__)


def scoring(ctx: StageContext) -> Scoring:
    return Scoring(ctx.config.scoring.rel_tol, ctx.config.scoring.math_timeout)


# --- engines ---------------------------------------------------------------------------------------

def engine_replicas(ctx: StageContext, engine, model: str) -> EngineRouter:
    """The model's replicas, served as the engine config section `engine` says; started once per pipeline run."""
    init_ray()
    spec = engine.spec(model)
    placement = ReplicaResources(num_gpus=engine.gpus_per_replica, num_cpus=engine.cpus_per_replica,
                                 custom=tuple(sorted(engine.resources.items())))

    def start():
        log.info("starting %d replica(s) of %s (%s backend)", engine.replicas, model, engine.backend)
        router = EngineRouter.launch(spec, engine.replicas, placement)
        log.debug("engine replicas placed: %s", router.placement)
        return router

    return ctx.services.get(("engine", repr(spec), engine.replicas, placement), start,
                            lambda router: asyncio.run(router.close()))


# --- retrieval -------------------------------------------------------------------------------------

def index_kind(ctx: StageContext) -> IndexKind:
    c = ctx.config.index
    return IndexKind(c.kind, nlist=c.nlist, pq_m=c.pq_m, pq_bits=c.pq_bits, hnsw_m=c.hnsw_m, nprobe=c.nprobe,
                     ef_search=c.ef_search)


def shard_indexed(directory: Path, embedder: str, kind: IndexKind) -> bool:
    """Whether a shard has an index of `kind` over embeddings from `embedder`."""
    if not (directory / MANIFEST).is_file():
        return False
    manifest = ShardManifest.read(directory)
    return manifest.embedder == embedder and manifest.kind.built_as() == kind.built_as()


def index_built(ctx: StageContext) -> bool:
    """Whether the configured index exists, complete, for the configured embedder and kind."""
    try:
        directories = shard_dirs(index_dir(ctx))
    except ConfigError:
        return False
    embedder = resolve_embedder(ctx.config.models.embedder).name
    return all(shard_indexed(d, embedder, index_kind(ctx)) for d in directories)


def launch_retrieval(ctx: StageContext) -> RetrievalClient:
    """The index stage's shards as a Ray service, placed as `retrieval` says."""
    r = ctx.config.retrieval
    return RetrievalClient.launch(shard_dirs(index_dir(ctx)), resolve_embedder(ctx.config.models.embedder).name,
                                  replicas=r.replicas, cache_size=r.cache_size, search=index_kind(ctx),
                                  router_options={"num_cpus": r.router_cpus, "resources": dict(r.resources)},
                                  shard_options={"num_cpus": r.shard_cpus, "num_gpus": r.shard_gpus,
                                                 "resources": dict(r.resources)})


def retrieval_for_agents(ctx: StageContext) -> dict[str, Any]:
    """How rollout workers reach web_search: retrieval.url, else the index stage's shards as a Ray service."""
    r = ctx.config.retrieval
    if r.url:
        return {"retrieval_url": r.url}
    if not index_built(ctx):
        raise UserError(f"the agent's web_search needs a retrieval index: no built index at {index_dir(ctx)}; "
                        "run `ray-distill index CONFIG` or set retrieval.url")
    client = ctx.services.get(("retrieval", str(index_dir(ctx))), lambda: launch_retrieval(ctx), lambda c: c.close())
    return {"retrieval_routers": tuple(client.routers)}


def open_retriever(config) -> Retriever:
    """The agent's web_search in this process: the configured endpoint, else the index stage's shards."""
    if config.retrieval.url:
        return HttpRetriever(config.retrieval.url)
    ctx = StageContext(config, Path(config.run.dir))
    if not index_built(ctx):
        raise UserError(f"web_search needs a retrieval index, and there is none built for this config at "
                        f"{index_dir(ctx)}; build it with `ray-distill run CONFIG run.stages=[world,index]` (or "
                        "`ray-distill index CONFIG` over your own index.corpus), or set retrieval.url")
    return ShardedRetriever.load(shard_dirs(index_dir(ctx)), Encoder(config.models.embedder), index_kind(ctx))


def index_shards(ctx: StageContext) -> int:
    """The built index's shard count (0 where the agents use retrieval.url or no index is built)."""
    return len(shard_dirs(index_dir(ctx))) if not ctx.config.retrieval.url and index_built(ctx) else 0


# --- rollouts --------------------------------------------------------------------------------------

def check_capacity(ctx: StageContext, with_retrieval: bool, engine_section: str = "teacher_engine") -> None:
    """Fail early, naming each role, when a rollout stage's actors cannot fit a locally started Ray."""
    found = resources.roles(ctx.config, shards=len(shard_dirs(index_dir(ctx))) if with_retrieval else None)
    engine = "teacher replica" if engine_section == "teacher_engine" else "student replica"
    needed = (engine, "rollout worker") + (resources.RETRIEVAL if with_retrieval else ())
    require_resources(*resources.requirement(resources.pick(found, *needed)))


def run_rollouts(ctx: StageContext, items: list[RolloutItem], store, spec_fields: dict[str, Any], desc: str,
                 engine_section: str = "teacher_engine", model: Optional[str] = None) -> dict[str, Any]:
    """Run the store's missing items through the rollout workers (agents also get web_search), with
    `model` (default: the teacher) served as config section `engine_section` says; returns the run
    counts. Services start only if some item is missing."""
    r = ctx.config.rollout
    spec_fields = {"scoring": scoring(ctx), "max_attempts": r.max_attempts,
                   "episodes_in_flight": r.episodes_in_flight, "warm_sandboxes": r.warm_sandboxes,
                   "topk": ctx.config.retrieval.topk, "sandbox_policy": SandboxPolicy(weak_isolation=r.sandbox_isolation),
                   **spec_fields}

    def stream(todo):
        agents = spec_fields["kind"] == "agent"
        check_capacity(ctx, with_retrieval=agents and not ctx.config.retrieval.url, engine_section=engine_section)
        retrieval = retrieval_for_agents(ctx) if agents else {}
        engine = engine_replicas(ctx, getattr(ctx.config, engine_section), model or ctx.config.models.teacher)
        spec = RolloutSpec(engine_replicas=tuple(engine.replicas), model=engine.model, **spec_fields, **retrieval)
        return stream_outcomes(todo, spec, workers=r.workers, worker_cpus=r.worker_cpus, resources=r.resources)

    return run_items(items, store, stream, progress=ctx.progress, desc=desc, console=ctx.console)


def store_summary(store, run: dict[str, Any]) -> dict[str, Any]:
    """The stage summary: where the records are, this run's counts, accuracy per set, failed tries by kind."""
    columns = [c for c in SUMMARY_COLUMNS if c in store.schema.names]
    failures = Counter(error_kind(f["error"]) for f in store.failures())
    return {"dir": str(store.directory), "records": len(store), **run, "by_set": summarize(store.read(columns)),
            "failed_tries_by_kind": dict(failures)}


def store_headline(summary: dict[str, Any]) -> str:
    """A store summary in a few words: records, how many this run added, how many are correct."""
    sets = summary["by_set"].values()
    line = (f"{summary['records']} records ({summary['stored']} new), "
            f"{sum(s['correct'] for s in sets)} of {sum(s['records'] for s in sets)} correct")
    return line + (f", {summary['failed_attempts']} failed tries" if summary["failed_attempts"] else "")


# --- the judge -------------------------------------------------------------------------------------

def judge_answers(ctx: StageContext, asks: list[tuple[dict, str]], cache_path: Path) -> int:
    """The LLM judge (`scoring.judge`, served like the teacher) on the fact records among `asks` (record,
    answer field); returns the engine calls made. Its replicas start only if some fact record is asked."""
    if not fact_asks(asks):
        return 0
    if ctx.config.scoring.judge != ctx.config.models.teacher:
        ctx.services.close()  # other models' replicas and the retrieval service would hold what the judge needs
    judge = Judge(engine_replicas(ctx, ctx.config.teacher_engine, ctx.config.scoring.judge), cache_path)
    return judge_rows(judge, asks)
