"""What an episode leaves behind: the typed record the trajectory store writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class CandidateRecord:
    """One sampled action of a SAG step."""

    text: str
    code: Optional[str]
    parse_error: Optional[str]
    stdout: str = ""
    error: Optional[dict] = None
    final_answer: Any = None
    has_final_answer: bool = False
    executed: bool = False

    @property
    def valid(self) -> bool:
        return self.code is not None and self.executed and self.error is None


@dataclass
class StepRecord:
    index: int
    model_output: str  # the assistant turn as stored (FTP prefix included on step 0)
    thought: str
    code: Optional[str]
    parse_error: Optional[str]
    observation: str
    stdout: str = ""
    error: Optional[dict] = None
    final_answer: Any = None
    has_final_answer: bool = False
    tool_calls: list[dict] = field(default_factory=list)
    generation_seconds: float = 0.0
    execution_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # SAG only: every candidate, how many were valid, which one was kept.
    candidates: list[CandidateRecord] = field(default_factory=list)
    valid_candidates: Optional[int] = None
    chosen: Optional[int] = None


@dataclass
class EpisodeRecord:
    question: str
    question_id: Optional[str]
    dataset: Optional[str]
    model: str
    prompt_version: str
    sampling: dict
    sag: Optional[dict]
    ftp_prefix: Optional[str]
    # system, user (task), then assistant / tool (observation) turns
    messages: list[dict] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    final_answer: Optional[str] = None
    answered_by: Optional[str] = None  # "final_answer", "forced" (after max steps) or None
    forced_answer_output: Optional[str] = None
    error: Optional[str] = None  # infrastructure failure (engine, sandbox): retryable, not an answer
    context_exhausted: Optional[str] = None  # why the history no longer fit the model (not retryable)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)
