"""Stage `cot`: the teacher answers every training question in plain chain of thought.

The responses are the source of the first-thought prefixes (FTP) and the
training set of the CoT-distillation baseline (docs/METHOD.md stage 1).
"""

from __future__ import annotations

from typing import Any

from ray_distill.engines.protocol import SamplingParams
from ray_distill.generation.driver import missing_keys
from ray_distill.generation.records import COT_SCHEMA
from ray_distill.generation.store import RecordStore
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.items import cot_items
from ray_distill.stages.paths import cot_dir, cot_settings
from ray_distill.stages.services import run_rollouts, store_headline, store_summary


def _run(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config.cot
    r = ctx.config.rollout
    store = RecordStore(cot_dir(ctx), COT_SCHEMA, r.flush_every, r.flush_seconds, settings=cot_settings(ctx))
    sampling = SamplingParams(temperature=c.temperature, max_new_tokens=c.max_new_tokens, seed=c.seed)
    run = run_rollouts(ctx, cot_items(ctx), store, {"kind": "cot", "sampling": sampling}, desc="cot")
    return store_summary(store, run)


def _is_complete(ctx: StageContext) -> bool:
    return missing_keys(cot_items(ctx), cot_dir(ctx)) == 0


STAGE = Stage(
    name="cot",
    inputs=("models", "questions", "cot"),
    run=_run,
    is_complete=_is_complete,
    headline=store_headline,
)
