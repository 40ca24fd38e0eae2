"""Which records become training data (docs/METHOD.md stage 4), and why the others were dropped.

A trajectory is kept when it is correct and none of its steps had code that
could not be parsed; steps whose code raised are kept by default, since a
trajectory that recovers from an error teaches the student to retry. Each
rule is a config switch (`FilterConfig`). The first rule a record breaks is
its drop reason, so the summary counts every dropped record once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Optional

from ray_distill.config.schema import FilterConfig
from ray_distill.generation.rollout import Scoring


def rescore(rows: list[dict], answer_field: str, scoring: Scoring) -> None:
    """Score the records' answers again under `scoring` (and clear any judge verdict): the filter and the
    evaluation score under the configured scoring, whatever scored the records when they were made."""
    def score(row):
        return scoring.fields(row["domain"], row[answer_field], row["gold"], row["aliases"] or ())

    # Threads suffice: each symbolic check runs in its own process.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for row, fields in zip(rows, pool.map(score, rows)):
            row.update(fields, judge_correct=None)


def trajectory_drop_reason(row: dict, rules: FilterConfig) -> Optional[str]:
    if row["answered_by"] is None:
        return "no_answer"
    if rules.require_correct and not row["correct"]:
        return "incorrect"
    if rules.drop_parse_errors and row["parse_errors"]:
        return "parse_error"
    if rules.drop_forced_answers and row["answered_by"] == "forced":
        return "forced_answer"
    if rules.drop_execution_errors and row["execution_errors"]:
        return "execution_error"
    return None


def cot_drop_reason(row: dict, rules: FilterConfig) -> Optional[str]:
    if not row["answer"]:
        return "no_answer"
    if rules.require_correct and not row["correct"]:
        return "incorrect"
    return None


def verdict_summary(rows: Iterable[dict]) -> dict[str, Any]:
    """Per question set: records, kept, and dropped counts by reason."""
    sets: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        counts = sets[row["dataset"]]
        counts["records"] += 1
        counts["kept" if row["keep"] else f"dropped_{row['drop_reason']}"] += 1
    return {name: dict(counts) for name, counts in sorted(sets.items())}
