"""Answer scoring for the two domains: math (equivalence of final answers) and fact QA (EM / F1).

`score_answer` is what filtering and evaluation call; the functions below it
are exported for callers that need one step (extraction, normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ray_distill.scoring.math_answers import extract_answer, extract_boxed, math_equal, normalize_math
from ray_distill.scoring.qa import exact_match, f1_score, normalize_answer
from ray_distill.scoring.symbolic import latex_to_sympy, symbolic_equal

__all__ = [
    "DOMAINS",
    "Score",
    "exact_match",
    "extract_answer",
    "extract_boxed",
    "f1_score",
    "latex_to_sympy",
    "math_equal",
    "normalize_answer",
    "normalize_math",
    "score_answer",
    "symbolic_equal",
]

DOMAINS = ("fact", "math")


@dataclass(frozen=True)
class Score:
    correct: bool  # the verdict used for filtering
    exact_match: float  # QA EM (for math: 1.0 if correct else 0.0)
    f1: float  # QA F1 (for math: same as exact_match)
    method: str  # how it was decided: "math", "em", or "empty" for a missing prediction


def score_answer(
    domain: str,
    prediction: Optional[str],
    gold: str,
    aliases: Sequence[str] = (),
    *,
    rel_tol: float = 1e-4,
    timeout: float = 5.0,
) -> Score:
    """Score `prediction` (a final answer or a whole response: `<answer>` tags and `\\boxed{}` are
    unwrapped) against `gold` and its `aliases`. Math: `math_equal` with any of them (a gold with a
    `\\boxed{}` is unwrapped too). Fact: correct is exact match after SQuAD normalisation; F1 is filled."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown scoring domain {domain!r}; known domains: {', '.join(DOMAINS)}")
    answer = extract_answer(prediction) if isinstance(prediction, str) else ""
    if not answer:
        return Score(correct=False, exact_match=0.0, f1=0.0, method="empty")
    golds = [gold, *aliases]
    if domain == "math":
        correct = any(math_equal(answer, extract_answer(g), rel_tol=rel_tol, timeout=timeout) for g in golds)
        return Score(correct=correct, exact_match=float(correct), f1=float(correct), method="math")
    em = exact_match(answer, golds)
    return Score(correct=em == 1.0, exact_match=em, f1=f1_score(answer, golds), method="em")
