"""`ray-distill chat`: ask the agent a question and watch it work, step by step."""

from __future__ import annotations

import asyncio
from typing import Optional

from ray_distill.agent import Agent, AgentConfig, SAGConfig, StepRecord, retrieval_tools
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.config import ExperimentConfig
from ray_distill.engines import SamplingParams
from ray_distill.engines.spec import EngineSpec
from ray_distill.stages.services import open_retriever
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool


def _show(step: StepRecord) -> None:
    print(f"\n--- step {step.index + 1} ({step.generation_seconds:.1f} s to generate)")
    if step.candidates:
        print(f"[SAG] {step.valid_candidates}/{len(step.candidates)} valid candidates, kept #{step.chosen + 1}")
    print(step.model_output)
    print(step.observation)


def chat(config: ExperimentConfig, question: Optional[str], backend: str, sag: int, max_steps: int,
         max_new_tokens: int) -> int:
    retriever = open_retriever(config)
    engine = EngineSpec(backend, config.models.teacher).build()
    agent_config = AgentConfig(
        max_steps=max_steps,
        sampling=SamplingParams(max_new_tokens=max_new_tokens, stop=STOP_STRINGS),
        sag=SAGConfig(n=sag) if sag > 1 else None,
    )
    agent = Agent(engine, agent_config)

    async def session_loop() -> None:
        async with SandboxPool(SandboxPolicy(), retrieval_tools(retriever), size=1) as pool:
            while True:
                q = question if question is not None else _ask()
                if not q:
                    return
                async with pool.session() as sandbox:
                    record = await agent.run(q, sandbox, on_step=_show)
                print(f"\n=== answer: {record.final_answer!r} ({record.answered_by or 'none'}, "
                      f"{len(record.steps)} steps, {record.seconds:.1f} s)"
                      + (f"\n=== error: {record.error}" if record.error else ""))
                if question is not None:
                    return

    asyncio.run(session_loop())
    return 0


def _ask() -> str:
    try:
        return input("\nquestion> ").strip()
    except EOFError:
        return ""
