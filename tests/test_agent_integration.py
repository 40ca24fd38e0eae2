"""Real episodes: the embedded model writes the actions behind engine replicas on a local Ray,
real sandboxes run them, real retrieval answers web_search."""

from __future__ import annotations

import asyncio
import json

import pytest

from ray_distill.agent import Agent, AgentConfig, SAGConfig, first_thought_prefix, retrieval_tools
from ray_distill.agent.parsing import STOP_STRINGS, normalise_step
from ray_distill.data.world import write_world
from ray_distill.engines import SamplingParams
from ray_distill.engines.spec import EngineSpec
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=0, num_passages=300, num_fact_questions=4, num_math_questions=4,
                test_fraction=0.0, progress=False)
    questions = [json.loads((out / "questions" / f"{k}_train.json").read_text())["examples"][0] for k in ("fact", "math")]
    return out, questions


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_episodes_with_and_without_ftp_and_sag_through_local_ray(world, local_ray, backend):
    from ray_distill.distributed.engines import EngineRouter
    from ray_distill.tools.retrieval import Encoder, FaissRetriever

    out, questions = world
    router = EngineRouter.launch(EngineSpec(backend, "smollm2-135m-instruct"))
    retriever = FaissRetriever.from_corpus(sorted(str(p) for p in (out / "corpus").glob("*.jsonl")), Encoder("minilm-l6"))
    sampling = SamplingParams(max_new_tokens=48, stop=STOP_STRINGS)
    prefix = first_thought_prefix("I should find the facts one at a time.\n\nThen combine them.")
    variants = {
        "plain": (AgentConfig(max_steps=2, sampling=sampling), None),
        "ftp": (AgentConfig(max_steps=2, sampling=sampling), prefix),
        "sag": (AgentConfig(max_steps=2, sampling=sampling, sag=SAGConfig(n=3)), None),
        "ftp+sag": (AgentConfig(max_steps=2, sampling=sampling, sag=SAGConfig(n=3)), prefix),
    }

    async def everything():
        # The rollout worker's arrangement: its own pool, web_search answered on its event loop.
        async with SandboxPool(SandboxPolicy(timeout_seconds=10), retrieval_tools(retriever), size=4) as pool:
            async def one(config, ftp, q):
                async with pool.session() as session:
                    return await Agent(router, config).run(q["question"], session, ftp_prefix=ftp,
                                                           question_id=q["id"], dataset="world", seed=0)

            # one question per variant, fact and math alternating
            jobs = {(name, q["id"]): one(config, ftp, q)
                    for (name, (config, ftp)), q in zip(variants.items(), questions * 2)}
            return dict(zip(jobs, await asyncio.gather(*jobs.values())))

    try:
        records = asyncio.run(everything())
    finally:
        asyncio.run(router.close())

    assert len(records) == 4
    for (name, qid), record in records.items():
        assert record.error is None, (name, record.error)
        assert record.model == "smollm2-135m-instruct" and record.question_id == qid
        assert 1 <= len(record.steps) <= 2
        assert record.answered_by in ("final_answer", "forced", None)
        roles = [m["role"] for m in record.messages]
        assert roles[:2] == ["system", "user"] and roles[2::2] == ["assistant"] * len(record.steps)
        assert all(m["content"].startswith("Observation:") for m in record.messages[3::2])
        for step in record.steps:
            assert step.model_output.endswith("<end_code>") and step.generation_seconds > 0
            assert step.code is not None or step.parse_error is not None
        first_turn = record.messages[2]["content"]
        if "ftp" in name:
            assert first_turn.startswith(prefix.rstrip()) and record.ftp_prefix == prefix
        else:
            assert record.ftp_prefix is None
        if "sag" in name:
            for step in record.steps:
                assert len(step.candidates) == 3 and 0 <= step.valid_candidates <= 3
                assert step.model_output == normalise_step(step.candidates[step.chosen].text)
        else:
            assert all(not step.candidates and step.chosen is None for step in record.steps)
    # the model does write code that runs: some step somewhere executed cleanly
    assert any(s.code and s.error is None for r in records.values() for s in r.steps)
