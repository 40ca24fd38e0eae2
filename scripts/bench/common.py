"""Shared set-up of the agent benchmarks: a small world, its retriever, the hf engine."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from ray_distill.agent import Agent, retrieval_tools
from ray_distill.data.world import write_world
from ray_distill.tools.retrieval import Encoder, FaissRetriever
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool


def add_engine_args(parser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the engine's choice for this hardware)")


def hf_engine(args):
    from ray_distill.engines.hf import HFEngine

    return HFEngine(args.model, dtype=args.dtype)


def world_questions(n: int, num_passages: int = 500) -> tuple[list[dict], FaissRetriever]:
    out = Path(tempfile.mkdtemp(prefix="ray-distill-bench-"))
    write_world(out, seed=0, num_passages=num_passages, num_fact_questions=n, num_math_questions=n,
                test_fraction=0.0, progress=False)
    fact = json.loads((out / "questions" / "fact_train.json").read_text())["examples"]
    math = json.loads((out / "questions" / "math_train.json").read_text())["examples"]
    mixed = [q for pair in zip(fact, math) for q in pair][:n]
    return mixed, FaissRetriever.from_corpus(sorted((out / "corpus").glob("*.jsonl")), Encoder("minilm-l6"))


async def run_episodes(agent: Agent, questions: list[dict], retriever, concurrency: int) -> tuple[list, float]:
    """Run every question with at most `concurrency` episodes in flight; returns records and wall seconds."""
    gate = asyncio.Semaphore(concurrency)
    async with SandboxPool(SandboxPolicy(), retrieval_tools(retriever), size=min(concurrency, 8)) as pool:
        async def one(q):
            async with gate, pool.session() as sandbox:
                return await agent.run(q["question"], sandbox, question_id=q["id"], seed=0)

        start = time.perf_counter()
        records = await asyncio.gather(*(one(q) for q in questions))
        return records, time.perf_counter() - start


def summary(records) -> str:
    steps = sum(len(r.steps) for r in records)
    tokens = sum(s.completion_tokens for r in records for s in r.steps)
    errors = sum(r.error is not None for r in records)
    return f"{len(records)} episodes, {steps} steps, {tokens} generated tokens, {errors} infrastructure errors"


def median(values) -> float:
    return statistics.median(values) if values else float("nan")
