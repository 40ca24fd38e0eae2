"""The work items of the generation stages: one per (question, sample), seeded, with the FTP prefix
and temperature the stage gives it. `cot`, `generate` and `evaluate` run them; `filter` and the
stages' completeness checks use their keys."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from ray_distill.agent import first_thought_prefix
from ray_distill.data.benchmarks import default_data_dir
from ray_distill.data.datasets import domain_of, load_examples
from ray_distill.errors import UserError
from ray_distill.generation.records import RolloutItem
from ray_distill.generation.store import read_records
from ray_distill.stages.base import StageContext
from ray_distill.stages.paths import cot_dir, world_dir


def question_items(ctx: StageContext, sets: Sequence[str], limit: Optional[int], samples: int, seed: int,
                   temperature: Callable[[str], Optional[float]] = lambda name: None,
                   prefix: Callable[[str, str], Optional[str]] = lambda dataset, example_id: None
                   ) -> list[RolloutItem]:
    """One item per (question of `sets`, sample): sample i is seeded with seed + i."""
    config = ctx.config
    items = []
    for name in sets:
        domain = domain_of(name)
        examples = load_examples(name, world_dir(ctx), default_data_dir(config.benchmarks.data_dir),
                                 config.benchmarks.files, limit)
        for example in examples:
            aliases = tuple(a for a in example.metadata.get("aliases", ()) if a != example.answer)
            for sample in range(samples):
                items.append(RolloutItem(name, example.id, sample, domain, example.question, example.answer,
                                         aliases, seed=seed + sample, ftp_prefix=prefix(name, example.id),
                                         temperature=temperature(name)))
    return items


def train_items(ctx: StageContext, samples: int, seed: int, **kwargs) -> list[RolloutItem]:
    """The training questions' items (see `question_items`)."""
    q = ctx.config.questions
    return question_items(ctx, q.train, q.limit, samples, seed, **kwargs)


def cot_items(ctx: StageContext) -> list[RolloutItem]:
    c = ctx.config.cot
    return train_items(ctx, samples=1, seed=c.seed, temperature=lambda name: c.temperatures.get(name, c.temperature))


def ftp_prefixes(ctx: StageContext) -> dict[tuple[str, str], Optional[str]]:
    """(dataset, example id) -> the first-thought prefix from the teacher's CoT response
    (None where the response was empty: that question runs without a prefix)."""
    try:
        table = read_records(cot_dir(ctx), ["dataset", "example_id", "sample", "response"])
    except FileNotFoundError:
        return {}
    return {(row["dataset"], row["example_id"]): first_thought_prefix(row["response"]) if row["response"].strip()
            else None for row in table.to_pylist() if row["sample"] == 0}


def generate_items(ctx: StageContext, check_prefixes: bool = True) -> list[RolloutItem]:
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


def evaluate_items(ctx: StageContext) -> list[RolloutItem]:
    e = ctx.config.evaluate
    samples = e.self_consistency if e.mode == "cot" else 1
    return question_items(ctx, e.sets, e.limit, samples=samples, seed=e.seed)
