"""Stage `generate`: the teacher solves the training questions as a CodeAct agent (docs/METHOD.md stages 2-3).

With `generate.ftp`, each episode's first step continues the first paragraph
of the teacher's CoT response to the same question (from the `cot` stage).
Trajectories stream into a record store as they finish, scored on arrival;
a rerun does only the questions the store lacks.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from ray_distill.agent import prompts
from ray_distill.errors import UserError
from ray_distill.generation.records import TRAJECTORY_SCHEMA, RolloutItem
from ray_distill.stages.base import Stage, StageContext


def generate_dir(ctx: StageContext) -> Path:
    """The store of this config's trajectories: one directory per teacher, agent settings, FTP source and retrieval."""
    from ray_distill.generation.driver import settings_dir
    from ray_distill.stages.cot import cot_dir
    from ray_distill.stages.rollouts import retrieval_settings, source_settings

    g = ctx.config.generate
    tag = "ftp" if g.ftp else "no-ftp"
    settings = {k: v for k, v in asdict(g).items() if k != "samples"}  # more samples add keys to the same store
    return settings_dir(ctx.run_dir / "generate" / tag, {
        "model": ctx.config.models.teacher, "prompt_version": prompts.PROMPT_VERSION, "generate": settings,
        "ftp_source": cot_dir(ctx).name if g.ftp else None, "retrieval": retrieval_settings(ctx),
        **source_settings(ctx)})


def ftp_prefixes(ctx: StageContext) -> dict[tuple[str, str], Optional[str]]:
    """(dataset, example id) -> the first-thought prefix from the teacher's CoT response
    (None where the response was empty: that question runs without a prefix)."""
    from ray_distill.agent import first_thought_prefix
    from ray_distill.generation.store import read_records
    from ray_distill.stages.cot import cot_dir

    try:
        table = read_records(cot_dir(ctx), ["dataset", "example_id", "sample", "response"])
    except FileNotFoundError:
        return {}
    return {(row["dataset"], row["example_id"]): first_thought_prefix(row["response"]) if row["response"].strip()
            else None for row in table.to_pylist() if row["sample"] == 0}


def generate_items(ctx: StageContext, check_prefixes: bool = True) -> list[RolloutItem]:
    from ray_distill.stages.cot import cot_dir
    from ray_distill.stages.rollouts import train_items

    g = ctx.config.generate
    prefixes = ftp_prefixes(ctx) if g.ftp else {}
    items = train_items(ctx, samples=g.samples, seed=g.seed, prefix=lambda dataset, id_: prefixes.get((dataset, id_)))
    if g.ftp and check_prefixes:
        missing = {item.key[:2] for item in items} - prefixes.keys()
        if missing:
            raise UserError(f"generate.ftp needs the teacher's CoT responses, and {len(missing)} question(s) have none; "
                            "run `ray-distill cot CONFIG` first, or again if its questions failed every try "
                            f"(see {cot_dir(ctx) / 'failures.jsonl'}); or set generate.ftp=false")
    return items


def agent_config(ctx: StageContext, system_prompt: str = prompts.TEACHER_SYSTEM_PROMPT, few_shot: bool = True,
                 sag: Optional[Any] = None):
    from ray_distill.agent import AgentConfig
    from ray_distill.agent.parsing import STOP_STRINGS
    from ray_distill.engines.protocol import SamplingParams

    g = ctx.config.generate
    return AgentConfig(system_prompt=system_prompt, few_shot=few_shot, max_steps=g.max_steps, sag=sag,
                       sampling=SamplingParams(temperature=g.temperature, max_new_tokens=g.max_new_tokens,
                                               stop=STOP_STRINGS))


def _run(ctx: StageContext) -> dict[str, Any]:
    from ray_distill.generation.store import RecordStore
    from ray_distill.stages.rollouts import run_rollouts, store_summary

    r = ctx.config.rollout
    items = generate_items(ctx)
    store = RecordStore(generate_dir(ctx), TRAJECTORY_SCHEMA, r.flush_every, r.flush_seconds)
    fields = {"kind": "agent", "agent": agent_config(ctx)}
    run = run_rollouts(ctx, items, store, fields, desc="generate")
    return {**store_summary(store, run), "ftp": ctx.config.generate.ftp}


def _is_complete(ctx: StageContext) -> bool:
    from ray_distill.generation.driver import missing_keys

    return missing_keys(generate_items(ctx, check_prefixes=False), generate_dir(ctx)) == 0


STAGE = Stage(
    name="generate",
    help="the teacher solves the training questions as a CodeAct agent (with FTP prefixes from `cot`)",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index"),
    run=_run,
    is_complete=_is_complete,
)
