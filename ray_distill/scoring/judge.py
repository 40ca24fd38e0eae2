"""An LLM judge for fact answers, on one of our own engines (no paid API).

Binary and deliberately strict on missing information, tolerant of
aliases and phrasing, as in the paper. The prompt is fixed and versioned,
decoding is greedy, and verdicts are cached by (judge model, prompt
version, question, answer, gold) in an append-only JSONL file, so a rerun
never asks twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

from ray_distill.engines.protocol import Engine, GenerationRequest, SamplingParams
from ray_distill.fileio import append_jsonl, read_jsonl

JUDGE_PROMPT_VERSION = "judge-v1"
JUDGE_SYSTEM_PROMPT = (
    "You grade answers to questions. Given a question, a gold answer and a predicted answer, decide whether the "
    "prediction means the same as the gold answer. Accept other names for the same thing, different phrasing, "
    "formatting and extra detail that does not contradict the gold answer. Reject a prediction that is wrong, "
    "that misses part of what the gold answer says, or that hedges between several answers. "
    "Reply with one word: yes or no."
)


def judge_messages(question: str, answer: str, gold: str) -> list[dict]:
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": f"Question: {question}\nGold answer: {gold}\nPredicted answer: {answer}\n"
                                        "Is the predicted answer correct? Reply yes or no."}]


def parse_verdict(text: str) -> bool:
    """yes -> True; anything else (no, or an unreadable reply) -> False."""
    words = text.strip().lower().lstrip("*\"' ").split()
    return bool(words) and words[0].rstrip(".,!:;*\"'") in ("yes", "correct", "true")


class Judge:
    def __init__(self, engine: Engine, cache_path: str | Path, max_new_tokens: int = 8):
        self.engine = engine
        self.cache_path = Path(cache_path)
        self.max_new_tokens = max_new_tokens
        self.cache: dict[str, bool] = {}
        self._asking: dict[str, asyncio.Future] = {}  # identical triples in flight share one call
        self.asked = 0  # engine calls made (the rest came from the cache)
        for entry in read_jsonl(self.cache_path):
            self.cache[entry["key"]] = entry["correct"]

    def _key(self, question: str, answer: str, gold: str) -> str:
        text = json.dumps([self.engine.model, JUDGE_PROMPT_VERSION, question, answer, gold])
        return hashlib.sha256(text.encode()).hexdigest()

    async def judge(self, question: str, answer: Optional[str], gold: str) -> bool:
        if not answer or not answer.strip():
            return False
        key = self._key(question, answer, gold)
        if key in self.cache:
            return self.cache[key]
        if key not in self._asking:
            self._asking[key] = asyncio.ensure_future(self._ask(key, question, answer, gold))
        try:
            return await asyncio.shield(self._asking[key])
        finally:
            self._asking.pop(key, None)

    async def _ask(self, key: str, question: str, answer: str, gold: str) -> bool:
        completion = await self.engine.generate(GenerationRequest(
            judge_messages(question, answer, gold), SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)))
        self.asked += 1
        reply = completion.texts[0]
        self.cache[key] = parse_verdict(reply)
        append_jsonl(self.cache_path, {"key": key, "correct": self.cache[key], "reply": reply})
        return self.cache[key]

    async def judge_all(self, triples: Sequence[tuple[str, Optional[str], str]], concurrency: int = 64) -> list[bool]:
        """Verdicts for (question, answer, gold) triples, with up to `concurrency` engine calls at once."""
        gate = asyncio.Semaphore(concurrency)

        async def one(triple):
            async with gate:
                return await self.judge(*triple)

        return list(await asyncio.gather(*(one(t) for t in triples)))


def fact_asks(asks: Sequence[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """The (record, answer field) pairs the judge grades: fact questions (math is checked symbolically)."""
    return [(row, field) for row, field in asks if row["domain"] == "fact"]


def judge_rows(judge: Judge, asks: Sequence[tuple[dict, str]]) -> int:
    """Grade each fact record's answer (`asks`: record, answer field): sets `judge_correct`, and `correct`
    (an exact match, aliases included, stays correct); returns the engine calls made (the rest came from
    the cache)."""
    asks = fact_asks(asks)
    verdicts = asyncio.run(judge.judge_all([(row["question"], row[field], row["gold"]) for row, field in asks]))
    for (row, _), verdict in zip(asks, verdicts):
        row.update(judge_correct=verdict, correct=bool(verdict or row["exact_match"] == 1.0), score_method="judge")
    return judge.asked
