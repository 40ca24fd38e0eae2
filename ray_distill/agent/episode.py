"""The CodeAct episode: think, write code, observe, repeat, answer.

An episode is a coroutine, so one process keeps many in flight: while one
waits for the engine, others execute code or wait for retrieval. Each step
asks the engine for one action (or N with SAG), runs it in the episode's
sandbox session, and turns what happened into the next observation.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional, Sequence

from ray_distill.agent import prompts
from ray_distill.agent.parsing import PARSE_ERROR_HINT, STOP_STRINGS, normalise_step, parse_step
from ray_distill.agent.records import CandidateRecord, EpisodeRecord, StepRecord
from ray_distill.agent.sag import choose_candidate
from ray_distill.engines.protocol import ContextLengthError, Engine, GenerationRequest, SamplingParams
from ray_distill.tools.sandbox import ExecResult, Sandbox, SandboxError


@dataclass(frozen=True)
class SAGConfig:
    n: int = 8
    temperature: float = 0.4
    top_p: float = 0.8
    no_valid: str = "first"  # "first" or "random"


@dataclass(frozen=True)
class AgentConfig:
    system_prompt: str = prompts.TEACHER_SYSTEM_PROMPT
    few_shot: bool = True  # worked episodes as earlier turns (the teacher); False for students
    max_steps: int = 5
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=1024, stop=STOP_STRINGS))
    sag: Optional[SAGConfig] = None
    forced_answer_tokens: int = 256


def first_thought_prefix(cot_response: str) -> str:
    """FTP: 'Thought: ' + the first paragraph of the teacher's CoT answer."""
    paragraph = cot_response.strip().split("\n\n", 1)[0].strip()
    return f"Thought: {paragraph}\n\n"


def chat_view(messages: Sequence[dict], few_shot: bool = False) -> list[dict]:
    """Messages as the engine gets them: observations travel as user turns, and
    the worked episodes (if any) sit between the system prompt and the task."""
    view = [{"role": "user" if m["role"] == "tool" else m["role"], "content": m["content"]} for m in messages]
    return view[:1] + prompts.few_shot_messages() + view[1:] if few_shot else view


def _observation(result: Optional[ExecResult], parse_error: Optional[str]) -> str:
    if result is None:
        return prompts.error_message(f"{PARSE_ERROR_HINT}\n(Reason: {parse_error}.)")
    if result.error is not None:
        error = result.error
        where = f" at line {error['line']}: {error['source']}" if error.get("line") and error.get("source") else ""
        return prompts.error_message(f"{error['type']}: {error['message']}{where}", result.stdout)
    return prompts.observation_message(result.stdout, result.truncated)


class ToolInfrastructureError(RuntimeError):
    """A tool's backend failed during the step: the episode records an infrastructure error."""


def _check_tools(results) -> None:
    for result in results:
        for call in result.tool_calls:
            if call.get("unavailable"):
                raise ToolInfrastructureError(f"{call['name']}: {call['error']}")


class Agent:
    def __init__(self, engine: Engine, config: AgentConfig = AgentConfig()):
        self.engine = engine
        self.config = config

    async def run(self, question: str, sandbox: Sandbox, *, ftp_prefix: Optional[str] = None,
                  question_id: Optional[str] = None, dataset: Optional[str] = None, seed: Optional[int] = None,
                  on_step: Optional[Callable[[StepRecord], None]] = None) -> EpisodeRecord:
        """One episode; `on_step` sees each step as soon as it is done (for live display)."""
        config = self.config
        start = time.perf_counter()
        record = EpisodeRecord(
            question=question, question_id=question_id, dataset=dataset, model=self.engine.model,
            prompt_version=prompts.PROMPT_VERSION, sampling=asdict(config.sampling),
            sag=asdict(config.sag) if config.sag else None, ftp_prefix=ftp_prefix,
            messages=[{"role": "system", "content": config.system_prompt},
                      {"role": "user", "content": prompts.task_message(question)}],
        )
        rng = random.Random(seed)
        session_id = f"{dataset}:{question_id}:{seed}"
        try:
            for index in range(config.max_steps):
                step = await self._step(record, index, ftp_prefix if index == 0 else None, seed, rng, sandbox, session_id)
                record.steps.append(step)
                if on_step is not None:
                    on_step(step)
                record.messages.append({"role": "assistant", "content": step.model_output})
                record.messages.append({"role": "tool", "content": step.observation})
                if step.has_final_answer:
                    record.final_answer, record.answered_by = str(step.final_answer), "final_answer"
                    break
            else:
                await self._force_answer(record, question, session_id)
        except ContextLengthError as e:  # the history outgrew the model: the episode ends unanswered
            record.context_exhausted = str(e)
        except SandboxError as e:
            record.error = f"sandbox: {e}"
        except Exception as e:  # engine or tool infrastructure: retryable, never an answer
            record.error = f"{type(e).__name__}: {e}"
        record.seconds = time.perf_counter() - start
        return record

    async def _step(self, record: EpisodeRecord, index: int, prefix: Optional[str], seed: Optional[int],
                    rng: random.Random, sandbox: Sandbox, session_id: str) -> StepRecord:
        config = self.config
        params = config.sampling
        if config.sag:
            params = replace(params, n=config.sag.n, temperature=config.sag.temperature, top_p=config.sag.top_p)
        params = replace(params, seed=None if seed is None else seed * 1000 + index)
        messages = chat_view(record.messages, config.few_shot)
        # Chat templates trim a continued message's trailing whitespace, so the
        # prefix is given (and stored) without it; the model writes the rest.
        prefix = prefix.rstrip() if prefix else None
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
        t0 = time.perf_counter()
        completion = await self.engine.generate(GenerationRequest(
            messages, params, continue_final_message=bool(prefix), session_id=session_id))
        generation_seconds = time.perf_counter() - t0
        texts = [(prefix or "") + text for text in completion.texts]
        parsed = [parse_step(text) for text in texts]

        t0 = time.perf_counter()
        candidates: list[CandidateRecord] = []
        if config.sag:
            candidates = [CandidateRecord(text=t, code=p.code, parse_error=p.error) for t, p in zip(texts, parsed)]
            runnable = [i for i, p in enumerate(parsed) if p.ok]
            results: dict[int, ExecResult] = {}
            if runnable:
                outcomes = await sandbox.run_candidates([parsed[i].code for i in runnable])
                results = dict(zip(runnable, outcomes))
                for i, result in results.items():
                    c = candidates[i]
                    c.executed, c.stdout, c.error = True, result.stdout, result.error
                    c.final_answer, c.has_final_answer = result.final_answer, result.has_final_answer
            _check_tools(results.values())
            chosen = choose_candidate(candidates, config.sag.no_valid, rng)
            if runnable:
                await sandbox.choose(runnable.index(chosen) if chosen in results else None)
            result = results.get(chosen)
        else:
            chosen = 0
            result = await sandbox.run(parsed[0].code) if parsed[0].ok else None
            _check_tools([result] if result else [])
        execution_seconds = time.perf_counter() - t0

        step = parsed[chosen]
        return StepRecord(
            index=index,
            model_output=normalise_step(texts[chosen]),
            thought=step.thought,
            code=step.code,
            parse_error=step.error,
            observation=_observation(result, step.error),
            stdout=result.stdout if result else "",
            error=result.error if result else None,
            final_answer=result.final_answer if result else None,
            has_final_answer=bool(result and result.has_final_answer and result.error is None),
            tool_calls=result.tool_calls if result else [],
            generation_seconds=generation_seconds,
            execution_seconds=execution_seconds,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=sum(s.tokens for s in completion.samples),
            candidates=candidates,
            valid_candidates=sum(c.valid for c in candidates) if config.sag else None,
            chosen=chosen if config.sag else None,
        )

    async def _force_answer(self, record: EpisodeRecord, question: str, session_id: str) -> None:
        """After max steps without final_answer: one extra call asks for the answer."""
        messages = chat_view(record.messages, self.config.few_shot) + [
            {"role": "user", "content": prompts.final_answer_request(question)}
        ]
        params = SamplingParams(max_new_tokens=self.config.forced_answer_tokens)
        completion = await self.engine.generate(GenerationRequest(messages, params, session_id=session_id))
        text = completion.texts[0].strip()
        record.forced_answer_output = text
        record.final_answer, record.answered_by = (text, "forced") if text else (None, None)
