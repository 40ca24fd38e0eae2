"""The world oracle teacher: its actions run in real sandboxes against the real index and solve the
world's questions; the first-thought prefix of its CoT answer is continued, not repeated."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ray_distill.agent import Agent, AgentConfig, first_thought_prefix, retrieval_tools
from ray_distill.agent.parsing import parse_step
from ray_distill.data.world import write_world
from ray_distill.engines import GenerationRequest
from ray_distill.agent.oracle import WorldOracleEngine
from ray_distill.scoring import score_answer
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool

pytestmark = pytest.mark.slow  # the embedded embedder and real sandboxes


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=0, num_passages=300, num_fact_questions=16, num_math_questions=12, test_fraction=0.0,
                progress=False)
    return out


def examples(world: Path, kind: str) -> list[dict]:
    return json.loads((world / "questions" / f"{kind}_train.json").read_text())["examples"]


def test_oracle_episodes_solve_world_questions_through_real_tools(world):
    from ray_distill.tools.retrieval import Encoder, FaissRetriever

    retriever = FaissRetriever.from_corpus(sorted((world / "corpus").glob("*.jsonl")), Encoder("minilm-l6"))
    agent = Agent(WorldOracleEngine(world_dir=str(world)), AgentConfig(max_steps=4))
    questions = examples(world, "fact") + examples(world, "math")

    async def run_all():
        async with SandboxPool(SandboxPolicy(), retrieval_tools(retriever), size=2) as pool:
            async def one(q):
                async with pool.session() as sandbox:
                    return await agent.run(q["question"], sandbox)
            return await asyncio.gather(*(one(q) for q in questions))

    records = asyncio.run(run_all())
    for q, record in zip(questions, records):
        assert record.answered_by == "final_answer" and not record.error, record.steps[-1].observation
        domain = "math" if "solution" in q else "fact"
        assert score_answer(domain, record.final_answer, q["answer"]).correct
        assert not any(step.parse_error or step.error for step in record.steps)
    # The searches are real: most hops' facts come back from the index in the observations.
    found = sum(hop["fact"] in " ".join(s.observation for s in r.steps)
                for q, r in zip(questions, records) for hop in q.get("hops", []))
    hops = sum(len(q.get("hops", [])) for q in questions)
    assert found >= 0.8 * hops, (found, hops)
    # A math episode ran its program: the first observation holds the printed answer.
    math = [(q, r) for q, r in zip(questions, records) if "solution" in q]
    assert all(r.steps[0].stdout.strip() for _, r in math)


def test_the_ftp_prefix_is_continued_and_unknown_questions_fail(world):
    oracle = WorldOracleEngine(world_dir=str(world))
    q = examples(world, "fact")[0]
    cot = asyncio.run(oracle.generate(GenerationRequest([{"role": "user", "content": q["question"]}])))
    response = cot.texts[0]
    assert response.endswith(f"<answer>{q['answer']}</answer>")
    prefix = first_thought_prefix(response)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": f"Task: {q['question']}"},
                {"role": "assistant", "content": prefix}]
    messages[-1]["content"] = prefix.rstrip()  # as the agent sends it
    continued = asyncio.run(oracle.generate(GenerationRequest(messages, continue_final_message=True))).texts[0]
    step = parse_step(messages[-1]["content"] + continued)
    assert step.thought == prefix.strip().removeprefix("Thought: ") and step.code.startswith("print(web_search(")
    with pytest.raises(ValueError, match="only its world's questions"):
        asyncio.run(oracle.generate(GenerationRequest([{"role": "user", "content": "What is 2+2?"}])))
    with pytest.raises(ValueError, match="world_dir"):
        WorldOracleEngine(world_dir=None)
