"""Teacher generation: the distributed `generate` stage vs a sequential loop (the reference's style).

    .venv/bin/python scripts/bench/generation.py [--backends hf vllm] [--questions 16]

For each engine backend, on the same world questions, index and agent settings:
- sequential: the engine in this process, one episode after another, each in a
  fresh sandbox session with web_search on the same index (what the reference
  code does per question);
- distributed: `ray-distill generate` as the pipeline runs it: engine replica
  actor, rollout workers in a Ray Data pipeline with many episodes in flight,
  the retrieval service, a trajectory store. Its time starts once the engine
  and retrieval service are up (the sequential loop's engine is loaded before
  its clock starts too).
Prints episodes/s and tokens/s of both and their ratio (target >= 4x).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from ray_distill.agent import Agent, retrieval_tools
from ray_distill.config import load_config
from ray_distill.stages.base import StageContext
from ray_distill.stages.generate import agent_config
from ray_distill.stages.items import generate_items
from ray_distill.stages.pipeline import run_pipeline
from ray_distill.stages.services import open_retriever
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool


def config_for(run_dir: Path, backend: str, args):
    return load_config(None, [
        f"run.dir={run_dir}", f"models.teacher={args.model}", "world.num_passages=500",
        f"world.num_fact_questions={args.questions}", f"world.num_math_questions={args.questions}",
        "world.test_fraction=0", f"questions.limit={args.questions // 2}", "index.passages_per_shard=250",
        "retrieval.router_cpus=0", "retrieval.shard_cpus=0",
        f"teacher_engine.backend={backend}", "teacher_engine.cpus_per_replica=2",
        "generate.ftp=false", f"generate.max_steps={args.max_steps}", f"generate.max_new_tokens={args.max_new_tokens}",
        f"rollout.episodes_in_flight={args.in_flight}",
        *(f"teacher_engine.options.{option}" for option in args.engine_option),
    ])


def sequential(ctx: StageContext, backend: str) -> tuple[float, int, int]:
    """Seconds, episodes and generated tokens of one-at-a-time episodes with an in-process engine."""
    engine = ctx.config.teacher_engine.spec(ctx.config.models.teacher).build()
    agent = Agent(engine, agent_config(ctx))
    items = generate_items(ctx)

    async def loop():
        async with SandboxPool(SandboxPolicy(), retrieval_tools(open_retriever(ctx.config)), size=1) as pool:
            start = time.perf_counter()
            tokens = 0
            for item in items:
                async with pool.session() as sandbox:
                    record = await agent.run(item.question, sandbox, question_id=item.example_id,
                                             dataset=item.dataset, seed=item.seed)
                tokens += sum(s.completion_tokens for s in record.steps)
            return time.perf_counter() - start, len(items), tokens

    try:
        return asyncio.run(loop())
    finally:
        asyncio.run(engine.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--questions", type=int, default=16, help="episodes per run (half fact, half math)")
    parser.add_argument("--in-flight", type=int, default=16, help="episodes in flight in the distributed run")
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword argument of the engine class, e.g. cpu_kvcache_gib=4 (vllm); repeatable")
    args = parser.parse_args()

    results = []
    for backend in args.backends:
        run_dir = Path(tempfile.mkdtemp(prefix=f"ray-distill-bench-generation-{backend}-"))
        config = config_for(run_dir, backend, args)
        run_pipeline(config, ["world", "index"], progress=False)
        ctx = StageContext(config, run_dir)
        seq_seconds, episodes, seq_tokens = sequential(ctx, backend)
        summary = run_pipeline(config, ["generate"], progress=True)["stages"]["generate"]["summary"]
        assert summary["stored"] == episodes, summary
        results.append((backend, episodes / seq_seconds, seq_tokens / seq_seconds,
                        summary["items_per_second"], summary["tokens_per_second"]))
        print(f"[{backend}] sequential {seq_seconds:.1f} s for {episodes} episodes; distributed {summary['seconds']} s")

    print(f"\nmodel {args.model}, {args.questions} episodes, max_steps {args.max_steps}, "
          f"max_new_tokens {args.max_new_tokens}, {args.in_flight} in flight")
    print(f"{'backend':<8} {'sequential ep/s':>16} {'tok/s':>8} {'distributed ep/s':>17} {'tok/s':>8} {'ratio':>7}")
    for backend, seq_eps, seq_tps, dist_eps, dist_tps in results:
        print(f"{backend:<8} {seq_eps:16.3f} {seq_tps:8.1f} {dist_eps:17.3f} {dist_tps:8.1f} {dist_eps / seq_eps:6.2f}x")
    print("target: distributed >= 4x sequential episodes/s")


if __name__ == "__main__":
    main()
