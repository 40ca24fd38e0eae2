"""Fact QA scoring: SQuAD answer normalisation, exact match and token F1, each the max over gold aliases."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Optional, Sequence

# HotpotQA's official eval: a yes/no answer earns no partial credit from a shared token.
_CLOSED_ANSWERS = frozenset({"yes", "no", "noanswer"})
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD)."""
    s = "".join(char for char in s.lower() if char not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: Optional[str], golds: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0."""
    if pred is None:
        return 0.0
    normalized = normalize_answer(pred)
    return float(any(normalized == normalize_answer(gold) for gold in _as_list(golds)))


def f1_score(pred: Optional[str], golds: str | Sequence[str]) -> float:
    """Token-level F1 between the normalised prediction and the best-matching gold."""
    if pred is None:
        return 0.0
    return max((_f1(normalize_answer(pred), normalize_answer(gold)) for gold in _as_list(golds)), default=0.0)


def _f1(pred: str, gold: str) -> float:
    if (pred in _CLOSED_ANSWERS or gold in _CLOSED_ANSWERS) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _as_list(golds: str | Sequence[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else [gold for gold in golds if gold is not None]
