"""Stage `generate`: the teacher solves the training questions as a CodeAct agent (docs/METHOD.md stages 2-3).

With `generate.ftp`, each episode's first step continues the first paragraph
of the teacher's CoT response to the same question (from the `cot` stage).
Trajectories stream into a record store as they finish, scored on arrival;
a rerun does only the questions the store lacks.
"""

from __future__ import annotations

from typing import Any

from ray_distill.agent import AgentConfig, prompts
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.engines.protocol import SamplingParams
from ray_distill.generation.driver import missing_keys
from ray_distill.generation.records import TRAJECTORY_SCHEMA
from ray_distill.generation.store import RecordStore
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.items import generate_items
from ray_distill.stages.paths import generate_dir, generate_settings
from ray_distill.stages.services import run_rollouts, store_headline, store_summary


def agent_config(ctx: StageContext) -> AgentConfig:
    """The teacher's agent: its system prompt with worked examples, and `generate`'s steps and sampling."""
    g = ctx.config.generate
    return AgentConfig(system_prompt=prompts.TEACHER_SYSTEM_PROMPT, few_shot=True, max_steps=g.max_steps,
                       sampling=SamplingParams(temperature=g.temperature, max_new_tokens=g.max_new_tokens,
                                               stop=STOP_STRINGS))


def _run(ctx: StageContext) -> dict[str, Any]:
    r = ctx.config.rollout
    items = generate_items(ctx)
    store = RecordStore(generate_dir(ctx), TRAJECTORY_SCHEMA, r.flush_every, r.flush_seconds,
                        settings=generate_settings(ctx))
    run = run_rollouts(ctx, items, store, {"kind": "agent", "agent": agent_config(ctx)}, desc="generate")
    return {**store_summary(store, run), "ftp": ctx.config.generate.ftp}


def _is_complete(ctx: StageContext) -> bool:
    return missing_keys(generate_items(ctx, check_prefixes=False), generate_dir(ctx)) == 0


STAGE = Stage(
    name="generate",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index"),
    run=_run,
    is_complete=_is_complete,
    headline=store_headline,
)
