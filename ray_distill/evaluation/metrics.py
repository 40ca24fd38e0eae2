"""Per-benchmark metrics of one evaluated model, from its answer records.

A record is a row of the trajectory schema (agent mode) or the CoT schema
(CoT mode), already scored. In CoT mode a question may have several
samples: self-consistency takes the most common answer (facts after QA
normalisation, math answers grouped by equivalence; ties go to the answer
seen first) and the question is scored by the first sample that gave it. Counts of what went wrong (parse and
execution errors, forced or missing answers, truncated responses) sit
beside the accuracy, because a model that learnt the format but not the
task looks different from one that never writes an action.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Optional, Sequence

from ray_distill.scoring import math_equal, normalize_answer, normalize_math


def vote_key(domain: str, answer: Optional[str]) -> Optional[str]:
    """What makes two answers the same vote: QA normalisation for facts, math normalisation for math."""
    if answer is None or not str(answer).strip():
        return None
    return normalize_answer(answer) if domain == "fact" else normalize_math(str(answer))


def self_consistent(samples: Sequence[dict], answer_field: str) -> dict:
    """The first sample giving the most common answer among `samples` (the first sample if none answered).
    Math answers that are equivalent (1/2, \\frac{1}{2}, 0.5) are one answer."""
    groups: list[tuple[str, list[int]]] = []  # (representative answer, members), in order of first appearance
    for i, sample in enumerate(samples):
        key = vote_key(sample["domain"], sample[answer_field])
        if key is None:
            continue
        same = (lambda a, b: a == b) if sample["domain"] == "fact" else (lambda a, b: a == b or math_equal(a, b))
        group = next((members for representative, members in groups if same(key, representative)), None)
        if group is None:
            groups.append((key, [i]))
        else:
            group.append(i)
    if not groups:
        return samples[0]
    return samples[max(groups, key=lambda g: len(g[1]))[1][0]]


def _mean(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def set_metrics(rows: Sequence[dict], mode: str) -> dict[str, Any]:
    """Metrics of one question set; `rows` are its records (several per question with self-consistency)."""
    answer_field = "final_answer" if mode == "agent" else "answer"
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["sample"]):
        by_question[row["example_id"]].append(row)
    chosen = [self_consistent(samples, answer_field) for samples in by_question.values()]
    metrics: dict[str, Any] = {
        "questions": len(chosen),
        "samples_per_question": round(len(rows) / len(chosen), 2) if chosen else 0,
        "accuracy": _mean(float(bool(r["correct"])) for r in chosen),
    }
    if chosen and chosen[0]["domain"] == "fact":
        metrics["exact_match"] = _mean(r["exact_match"] or 0.0 for r in chosen)
        metrics["f1"] = _mean(r["f1"] or 0.0 for r in chosen)
    judged = [r for r in chosen if r.get("judge_correct") is not None]
    if judged:
        metrics["judge_accuracy"] = _mean(float(r["judge_correct"]) for r in judged)
    if mode == "agent":
        answered = Counter(r["answered_by"] or "none" for r in rows)
        metrics.update(
            answered_by_final_answer=answered["final_answer"], answered_by_forced=answered["forced"],
            unanswered=answered["none"],
            parse_errors=sum(r["parse_errors"] for r in rows),
            execution_errors=sum(r["execution_errors"] for r in rows),
            episodes_with_parse_errors=sum(bool(r["parse_errors"]) for r in rows),
            episodes_with_execution_errors=sum(bool(r["execution_errors"]) for r in rows),
            context_exhausted=sum(r["context_exhausted"] is not None for r in rows),
            mean_steps=_mean(r["num_steps"] for r in rows),
        )
    else:
        metrics.update(
            unanswered=sum(r["answer"] is None for r in rows),
            truncated=sum(r["finish_reason"] == "length" for r in rows),
        )
    return metrics


def model_metrics(rows: Sequence[dict], sets: Sequence[str], mode: str) -> dict[str, Any]:
    """Per-set metrics in `sets` order, and their unweighted average accuracy (the paper's 'Avg.')."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_set[row["dataset"]].append(row)
    per_set = {name: set_metrics(by_set[name], mode) for name in sets if by_set.get(name)}
    return {"sets": per_set, "average": _mean(m["accuracy"] for m in per_set.values())}
