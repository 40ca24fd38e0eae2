"""Stage `cot`: the teacher answers every training question in plain chain of thought.

The responses are the source of the first-thought prefixes (FTP) and the
training set of the CoT-distillation baseline (docs/METHOD.md stage 1).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray_distill.agent import prompts
from ray_distill.generation.records import COT_SCHEMA, RolloutItem
from ray_distill.stages.base import Stage, StageContext


def cot_dir(ctx: StageContext) -> Path:
    """The store of this config's CoT responses (one directory per teacher and CoT settings)."""
    from ray_distill.generation.driver import settings_dir

    from ray_distill.stages.rollouts import source_settings

    return settings_dir(ctx.run_dir / "cot", {"model": ctx.config.models.teacher,
                                              "prompt_version": prompts.COT_PROMPT_VERSION,
                                              "cot": asdict(ctx.config.cot), **source_settings(ctx)})


def cot_items(ctx: StageContext) -> list[RolloutItem]:
    from ray_distill.stages.rollouts import train_items

    c = ctx.config.cot
    return train_items(ctx, samples=1, seed=c.seed, temperature=lambda name: c.temperatures.get(name, c.temperature))


def _run(ctx: StageContext) -> dict[str, Any]:
    from ray_distill.engines.protocol import SamplingParams
    from ray_distill.generation.store import RecordStore
    from ray_distill.stages.rollouts import run_rollouts, store_summary

    c = ctx.config.cot
    r = ctx.config.rollout
    store = RecordStore(cot_dir(ctx), COT_SCHEMA, r.flush_every, r.flush_seconds)
    sampling = SamplingParams(temperature=c.temperature, max_new_tokens=c.max_new_tokens, seed=c.seed)
    run = run_rollouts(ctx, cot_items(ctx), store, {"kind": "cot", "sampling": sampling}, desc="cot")
    return store_summary(store, run)


def _is_complete(ctx: StageContext) -> bool:
    from ray_distill.generation.driver import missing_keys

    return missing_keys(cot_items(ctx), cot_dir(ctx)) == 0


STAGE = Stage(
    name="cot",
    help="the teacher answers the training questions in plain chain of thought (FTP source, CoT baseline)",
    inputs=("models", "questions", "cot"),
    run=_run,
    is_complete=_is_complete,
)
