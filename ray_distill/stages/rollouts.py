"""What the `cot` and `generate` stages share: their work items, the teacher's engine replicas,
the retrieval service, and running items through the Ray Data rollout pipeline into a store."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

from ray_distill.config import EngineConfig
from ray_distill.data.benchmarks import default_data_dir
from ray_distill.data.datasets import domain_of, load_examples
from ray_distill.errors import UserError
from ray_distill.generation.records import RolloutItem
from ray_distill.stages.base import StageContext
from ray_distill.stages.world import world_dir

log = logging.getLogger(__name__)


def question_items(ctx: StageContext, sets: Sequence[str], limit: Optional[int], samples: int, seed: int,
                   temperature: Callable[[str], Optional[float]] = lambda name: None,
                   prefix: Callable[[str, str], Optional[str]] = lambda dataset, example_id: None
                   ) -> list[RolloutItem]:
    """One item per (question of `sets`, sample): sample i is seeded with seed + i."""
    config = ctx.config
    items = []
    for name in sets:
        domain = domain_of(name)
        examples = load_examples(name, world_dir(ctx), default_data_dir(config.benchmarks.data_dir),
                                 config.benchmarks.files, limit)
        for example in examples:
            aliases = tuple(a for a in example.metadata.get("aliases", ()) if a != example.answer)
            for sample in range(samples):
                items.append(RolloutItem(name, example.id, sample, domain, example.question, example.answer,
                                         aliases, seed=seed + sample, ftp_prefix=prefix(name, example.id),
                                         temperature=temperature(name)))
    return items


def train_items(ctx: StageContext, samples: int, seed: int, **kwargs) -> list[RolloutItem]:
    """The training questions' items (see `question_items`)."""
    q = ctx.config.questions
    return question_items(ctx, q.train, q.limit, samples, seed, **kwargs)


def set_digests(ctx: StageContext, sets: Sequence[str]) -> dict[str, str]:
    """Question set -> content hash of its file: records made from another version must not count as done."""
    from ray_distill.data.datasets import file_digest, set_file

    c = ctx.config
    return {name: file_digest(set_file(name, world_dir(ctx), default_data_dir(c.benchmarks.data_dir),
                                       c.benchmarks.files)) for name in sets}


def source_settings(ctx: StageContext) -> dict[str, Any]:
    """What shapes a generation store's records besides the stage's own settings: the question
    files (by content) and how the teacher is served (backend, dtype, options; not its replicas).
    Adding a question set or editing its file therefore starts a new store."""
    c = ctx.config
    return {"questions": set_digests(ctx, c.questions.train),
            "engine": repr(engine_spec(c.teacher_engine, c.models.teacher))}


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
    resources = ReplicaResources(num_gpus=engine.gpus_per_replica, num_cpus=engine.cpus_per_replica,
                                 custom=tuple(sorted(engine.resources.items())))

    def start():
        log.info("starting %d replica(s) of %s (%s backend)", engine.replicas, model, engine.backend)
        router = EngineRouter.launch(spec, engine.replicas, resources)
        log.info("engine replicas placed: %s", router.placement)
        return router

    return ctx.services.get(("engine", repr(spec), engine.replicas, resources), start, _close_router)


def _close_router(router) -> None:
    import asyncio

    asyncio.run(router.close())


def check_capacity(ctx: StageContext, with_retrieval: bool, engine_section: str = "teacher_engine") -> None:
    """Fail early, naming each setting, when the stage's actors cannot fit a locally started Ray."""
    from ray_distill.distributed.cluster import require_resources

    c = ctx.config
    e, r, q = getattr(c, engine_section), c.rollout, c.retrieval
    # A tensor-parallel replica reserves its CPUs once per GPU (one placement group bundle each).
    plan = {f"{engine_section}.replicas x cpus_per_replica (x gpus_per_replica above 1)":
            (e.replicas * e.cpus_per_replica * max(1, e.gpus_per_replica), e.replicas * e.gpus_per_replica),
            "rollout.workers x worker_cpus": (r.workers * r.worker_cpus, 0.0)}
    custom = {f"{engine_section}.resources": e.resources, "rollout.resources": r.resources}
    if with_retrieval and not q.url:
        from ray_distill.stages.index import index_dir, shard_dirs

        shards = len(shard_dirs(index_dir(ctx)))
        plan["retrieval.replicas x (router_cpus + shards x shard_cpus)"] = (
            q.replicas * (q.router_cpus + shards * q.shard_cpus), q.replicas * shards * q.shard_gpus)
        custom["retrieval.resources"] = q.resources
    require_resources(plan, custom)


def launch_retrieval(ctx: StageContext):
    """The index stage's shards as a Ray service (a RetrievalClient), placed as `retrieval` says."""
    from ray_distill.distributed.retrieval import RetrievalClient
    from ray_distill.models import resolve_embedder
    from ray_distill.stages.index import index_dir, index_kind, shard_dirs

    r = ctx.config.retrieval
    return RetrievalClient.launch(shard_dirs(index_dir(ctx)), resolve_embedder(ctx.config.models.embedder).name,
                                  replicas=r.replicas, cache_size=r.cache_size, search=index_kind(ctx),
                                  router_options={"num_cpus": r.router_cpus, "resources": dict(r.resources)},
                                  shard_options={"num_cpus": r.shard_cpus, "num_gpus": r.shard_gpus,
                                                 "resources": dict(r.resources)})


def retrieval_for_agents(ctx: StageContext) -> dict[str, Any]:
    """How rollout workers reach web_search: retrieval.url, else the index stage's shards as a Ray service."""
    from ray_distill.stages.index import index_built, index_dir

    r = ctx.config.retrieval
    if r.url:
        return {"retrieval_url": r.url}
    if not index_built(ctx):
        raise UserError(f"the agent's web_search needs a retrieval index: no built index at {index_dir(ctx)}; "
                        "run `ray-distill index CONFIG` or set retrieval.url")

    client = ctx.services.get(("retrieval", str(index_dir(ctx))), lambda: launch_retrieval(ctx), lambda c: c.close())
    return {"retrieval_routers": tuple(client.routers)}


def retrieval_settings(ctx: StageContext) -> dict[str, Any]:
    """What decides the passages web_search returns (part of a trajectory store's settings)."""
    from ray_distill.stages.index import index_dir

    c = ctx.config
    if c.retrieval.url:
        return {"url": c.retrieval.url, "topk": c.retrieval.topk}
    return {"index": str(index_dir(ctx)), "kind": c.index.kind, "embedder": c.models.embedder, "topk": c.retrieval.topk}


def run_rollouts(ctx: StageContext, items: list[RolloutItem], store, spec_fields: dict[str, Any], desc: str,
                 engine_section: str = "teacher_engine", model: Optional[str] = None):
    """Run the store's missing items through the rollout workers (agents also get web_search), with
    `model` (default: the teacher) served as config section `engine_section` says; returns the run
    counts. Services start only if some item is missing."""
    from ray_distill.distributed.rollouts import RolloutSpec, stream_outcomes
    from ray_distill.generation.driver import run_items
    from ray_distill.generation.rollout import Scoring
    from ray_distill.tools.sandbox import SandboxPolicy

    r = ctx.config.rollout
    s = ctx.config.scoring
    spec_fields = {"scoring": Scoring(s.rel_tol, s.math_timeout), "max_attempts": r.max_attempts,
                   "episodes_in_flight": r.episodes_in_flight, "warm_sandboxes": r.warm_sandboxes,
                   "topk": ctx.config.retrieval.topk, "sandbox_policy": SandboxPolicy(weak_isolation=r.sandbox_isolation),
                   **spec_fields}

    def stream(todo):
        agents = spec_fields["kind"] == "agent"
        check_capacity(ctx, with_retrieval=agents, engine_section=engine_section)
        retrieval = retrieval_for_agents(ctx) if agents else {}
        engine = engine_replicas(ctx, getattr(ctx.config, engine_section), model or ctx.config.models.teacher)
        spec = RolloutSpec(engine_replicas=tuple(engine.replicas), model=engine.model, **spec_fields, **retrieval)
        return stream_outcomes(todo, spec, workers=r.workers, worker_cpus=r.worker_cpus, resources=r.resources)

    return run_items(items, store, stream, progress=ctx.progress, desc=desc)


def store_summary(store, run: dict[str, Any]) -> dict[str, Any]:
    """The stage summary: where the records are, this run's counts, accuracy per set, failed tries by kind."""
    from collections import Counter

    from ray_distill.generation.driver import SUMMARY_COLUMNS, error_kind, summarize

    columns = [c for c in SUMMARY_COLUMNS if c in store.schema.names]
    failures = Counter(error_kind(f["error"]) for f in store.failures())
    return {"dir": str(store.directory), "records": len(store), **run, "by_set": summarize(store.read(columns)),
            "failed_tries_by_kind": dict(failures)}



def rescore(rows: list[dict], answer_field: str, ctx: StageContext) -> None:
    """Score the rows' answers again under the configured scoring (and clear any judge verdict)."""
    from concurrent.futures import ThreadPoolExecutor

    from ray_distill.generation.rollout import Scoring

    scoring = Scoring(ctx.config.scoring.rel_tol, ctx.config.scoring.math_timeout)

    def score(row):
        return scoring.fields(row["domain"], row[answer_field], row["gold"], row["aliases"] or ())

    # Threads suffice: each symbolic check runs in its own process.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for row, fields in zip(rows, pool.map(score, rows)):
            row.update(fields, judge_correct=None)


def judge_fact_answers(ctx: StageContext, asks: list[tuple[dict, str]], cache_path) -> int:
    """The LLM judge (scoring.judge, served like the teacher) on the fact rows among `asks` (row, answer
    field): sets `judge_correct`, and `correct` (an exact match, aliases included, stays correct);
    returns the engine calls made (the rest came from the cache)."""
    import asyncio

    from ray_distill.scoring.judge import Judge

    asks = [(row, field) for row, field in asks if row["domain"] == "fact"]
    if not asks:
        return 0
    if ctx.config.scoring.judge != ctx.config.models.teacher:
        ctx.services.close()  # other models' replicas and the retrieval service would hold what the judge needs
    judge = Judge(engine_replicas(ctx, ctx.config.teacher_engine, ctx.config.scoring.judge), cache_path)
    verdicts = asyncio.run(judge.judge_all([(row["question"], row[field], row["gold"]) for row, field in asks]))
    for (row, _), verdict in zip(asks, verdicts):
        row.update(judge_correct=verdict, correct=bool(verdict or row["exact_match"] == 1.0), score_method="judge")
    return judge.asked
