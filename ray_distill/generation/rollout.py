"""One work item in, its outcomes out: the per-question logic of the cot and generate stages.

A rollout is an async callable that answers one `RolloutItem`, scores the
answer and returns outcomes: a `Failure` for each attempt that failed for
infrastructure reasons (engine, sandbox or retrieval errors), then the
record once an attempt succeeds. After `max_attempts` failures it returns
only failures, so the item's key stays missing and a rerun tries it again;
a failure is never turned into an answer. The rollouts know nothing of Ray:
the Ray Data layer (`distributed/rollouts.py`) runs many of them at once in
each rollout worker, and tests and benchmarks run them directly.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Optional, Union

from ray_distill.agent import Agent, prompts
from ray_distill.engines.protocol import ContextLengthError, Engine, GenerationRequest, SamplingParams
from ray_distill.generation.records import RolloutItem, episode_row, item_row, run_fields
from ray_distill.generation.store import Key
from ray_distill.scoring import extract_answer, extract_boxed, score_answer
from ray_distill.tools.sandbox import SandboxPool


@dataclass(frozen=True)
class Failure:
    key: Key
    attempt: int
    error: str


Outcome = Union[dict, Failure]  # a finished record (a row of the stage's schema) or a failed attempt


@dataclass(frozen=True)
class Scoring:
    rel_tol: float = 1e-4
    math_timeout: float = 5.0

    def fields(self, domain: str, prediction: Optional[str], gold: str, aliases=()) -> dict:
        """A record's score columns."""
        score = score_answer(domain, prediction, gold, aliases, rel_tol=self.rel_tol, timeout=self.math_timeout)
        return {"correct": score.correct, "exact_match": score.exact_match, "f1": score.f1,
                "score_method": score.method}

    async def score(self, item: RolloutItem, prediction: Optional[str]) -> dict:
        # Symbolic checks wait on a subprocess: off the event loop, which runs other episodes.
        return await asyncio.to_thread(self.fields, item.domain, prediction, item.gold, item.aliases)


class Rollout(ABC):
    """Tries an item up to `max_attempts` times: the outcomes are a Failure per failed try, then the
    record if a try succeeded. `_attempt` returns the record, or the error of a failed try."""

    def __init__(self, scoring: Scoring, max_attempts: int):
        self.scoring = scoring
        self.max_attempts = max_attempts

    async def __call__(self, item: RolloutItem) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for attempt in range(1, self.max_attempts + 1):
            result = await self._attempt(item, attempt)
            if isinstance(result, dict):
                outcomes.append(result)
                break
            outcomes.append(Failure(item.key, attempt, result))
        return outcomes

    @abstractmethod
    async def _attempt(self, item: RolloutItem, attempt: int) -> Union[dict, str]: ...


class EpisodeRollout(Rollout):
    """A CodeAct episode per item (with the item's FTP prefix, if any) in a fresh sandbox session."""

    def __init__(self, agent: Agent, sandboxes: SandboxPool, scoring: Scoring = Scoring(), max_attempts: int = 3):
        super().__init__(scoring, max_attempts)
        self.agent = agent
        self.sandboxes = sandboxes

    async def _attempt(self, item: RolloutItem, attempt: int) -> Union[dict, str]:
        start = time.perf_counter()
        try:
            async with self.sandboxes.session() as sandbox:
                record = await self.agent.run(item.question, sandbox, ftp_prefix=item.ftp_prefix,
                                              question_id=item.example_id, dataset=item.dataset, seed=item.seed)
        except Exception as e:  # a sandbox that would not start
            return f"{type(e).__name__}: {e}"
        if record.error is not None:
            return record.error
        return {**episode_row(item, record), "seed": item.seed, **await self.scoring.score(item, record.final_answer),
                **run_fields(attempt, time.perf_counter() - start)}


class CotRollout(Rollout):
    """The teacher's plain chain-of-thought answer to each item (docs/METHOD.md stage 1)."""

    def __init__(self, engine: Engine, sampling: SamplingParams, scoring: Scoring = Scoring(), max_attempts: int = 3,
                 system_prompt: str = prompts.COT_SYSTEM_PROMPT):
        super().__init__(scoring, max_attempts)
        self.engine = engine
        self.sampling = sampling
        self.system_prompt = system_prompt

    async def _attempt(self, item: RolloutItem, attempt: int) -> Union[dict, str]:
        params = replace(self.sampling, seed=item.seed,
                         temperature=self.sampling.temperature if item.temperature is None else item.temperature)
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": item.question}]
        start = time.perf_counter()
        try:
            completion = await self.engine.generate(GenerationRequest(messages, params))
            response, finish, tokens = completion.texts[0], completion.samples[0].finish_reason, completion.samples[0].tokens
            prompt_tokens = completion.prompt_tokens
        except ContextLengthError as e:  # the question alone is too long: an empty answer, not a retry
            response, finish, tokens, prompt_tokens = "", f"context: {e}", 0, 0
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        # Only a marked answer counts: a chain of thought cut off mid-way has none.
        marked = "</answer>" in response or extract_boxed(response) is not None
        answer = extract_answer(response) if marked else None
        return {
            **item_row(item), "model": self.engine.model, "prompt_version": prompts.COT_PROMPT_VERSION,
            "sampling": json.dumps({"temperature": params.temperature, "top_p": params.top_p,
                                    "max_new_tokens": params.max_new_tokens, "seed": params.seed}),
            "system_prompt": self.system_prompt, "response": response, "answer": answer, "finish_reason": finish,
            "prompt_tokens": prompt_tokens, "completion_tokens": tokens,
            **await self.scoring.score(item, answer), **run_fields(attempt, time.perf_counter() - start),
        }
