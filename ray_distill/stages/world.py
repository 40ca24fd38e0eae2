"""Stage `world`: generate the fictional corpus and its questions."""

from __future__ import annotations

import json
from typing import Any

from ray_distill.data.world import read_manifest, write_world
from ray_distill.errors import ConfigError
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.paths import world_dir


def _run(ctx: StageContext) -> dict[str, Any]:
    w = ctx.config.world
    try:
        manifest = write_world(
            world_dir(ctx),
            seed=w.seed,
            num_passages=w.num_passages,
            num_fact_questions=w.num_fact_questions,
            num_math_questions=w.num_math_questions,
            test_fraction=w.test_fraction,
            shard_size=w.shard_size,
            progress=ctx.progress,
            console=ctx.console,
        )
    except ValueError as e:  # more questions than the world can hold
        raise ConfigError(f"world: {e}; lower world.num_fact_questions / num_math_questions "
                          f"or raise world.num_passages") from None
    example = json.loads((world_dir(ctx) / "questions" / "fact_test.json").read_text())["examples"][:1]
    return {
        "out_dir": str(world_dir(ctx)),
        "passages": manifest["num_passages"],
        "corpus_shards": len(manifest["corpus"]),
        "questions": {name: q["count"] for name, q in manifest["questions"].items()},
        "example": {"question": example[0]["question"], "answer": example[0]["answer"]} if example else None,
    }


def _is_complete(ctx: StageContext) -> bool:
    manifest = read_manifest(world_dir(ctx))
    return manifest is not None and all((world_dir(ctx) / f).is_file() for f in manifest["corpus"])


def _headline(summary: dict[str, Any]) -> str:
    questions = summary["questions"]
    return (f"{summary['passages']} passages, {sum(questions.values())} questions ("
            + ", ".join(f"{name} {count}" for name, count in questions.items()) + ")")


STAGE = Stage(
    name="world",
    inputs=("world",),
    run=_run,
    is_complete=_is_complete,
    outputs=lambda ctx: [world_dir(ctx)],
    headline=_headline,
)
