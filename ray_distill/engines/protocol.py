"""The engine protocol: chat messages in, sampled completions out.

Every backend (transformers, vLLM, an OpenAI-compatible server) implements
`Engine.generate`; the agent, the stages and the tests never know which one
runs. Requests are independent and async: an engine batches whatever is
pending, so callers simply keep many requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable


class ContextLengthError(ValueError):
    """The prompt does not fit the model's context: a property of the request, so retrying cannot help."""


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None  # same seed, same request, same samples

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class GenerationRequest:
    messages: Sequence[dict]  # [{"role": ..., "content": ...}, ...]
    params: SamplingParams = SamplingParams()
    # Continue the last (assistant) message instead of opening a new turn:
    # how the first-thought prefix is fed to the teacher.
    continue_final_message: bool = False
    # Requests of one episode share a session id, so a router can keep them
    # on one replica and reuse its prefix cache.
    session_id: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a generation request needs at least one message")
        if self.continue_final_message and self.messages[-1]["role"] != "assistant":
            raise ValueError("continue_final_message needs an assistant message last")


@dataclass(frozen=True)
class Sample:
    text: str  # without the stop string or end-of-sequence token
    finish_reason: str  # "stop" (a stop string), "eos" or "length"
    tokens: int


@dataclass(frozen=True)
class Completion:
    samples: list[Sample]
    prompt_tokens: int
    seconds: float = field(default=0.0, compare=False)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


@runtime_checkable
class Engine(Protocol):
    model: str

    async def generate(self, request: GenerationRequest) -> Completion: ...

    async def close(self) -> None: ...


def render_prompt(tokenizer, messages: Sequence[dict], continue_final_message: bool) -> str:
    """The prompt text of a chat, through the model's own chat template."""
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=not continue_final_message,
        continue_final_message=continue_final_message,
    )


def cut_at_stop(text: str, stop: Sequence[str], search_from: int = 0) -> Optional[int]:
    """Index of the earliest stop string in text[search_from:], or None."""
    hits = [i for i in (text.find(s, search_from) for s in stop) if i >= 0]
    return min(hits) if hits else None


def finish_reason(reason: Optional[str], stop_reason) -> str:
    """Our finish reason from an OpenAI/vLLM-style (finish_reason, stop_reason):
    both report "stop" for end-of-sequence and stop strings alike."""
    if reason == "length":
        return "length"
    return "stop" if isinstance(stop_reason, str) else "eos"
