"""What the generation stages store: work items, and the Parquet schemas of their records.

A `RolloutItem` is one (question, sample) to answer. A trajectory record
holds everything the later stages and a curious reader need: the teacher
model, sampling settings, prompt version and FTP prefix; the conversation as
chat messages; each step with its timings and errors; the final answer and
its score. The filter stage adds its verdict. Nested values are Parquet
lists and structs, so pandas, pyarrow and `datasets` read them directly.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import pyarrow as pa

from ray_distill.agent.records import CandidateRecord, EpisodeRecord, StepRecord
from ray_distill.agent.sag import vote_key
from ray_distill.generation.store import Key


@dataclass(frozen=True)
class RolloutItem:
    dataset: str
    example_id: str
    sample: int
    domain: str  # "fact" or "math": how the answer is scored
    question: str
    gold: str
    aliases: tuple[str, ...] = ()
    seed: Optional[int] = None
    ftp_prefix: Optional[str] = None
    temperature: Optional[float] = None  # per-item override of the stage's temperature

    @property
    def key(self) -> Key:
        return (self.dataset, self.example_id, self.sample)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "RolloutItem":
        fields = json.loads(text)
        return cls(**{**fields, "aliases": tuple(fields["aliases"])})


_ITEM_FIELDS = [
    ("dataset", pa.string()), ("example_id", pa.string()), ("sample", pa.int32()), ("domain", pa.string()),
    ("question", pa.string()), ("gold", pa.string()), ("aliases", pa.list_(pa.string())),
]
_SCORE_FIELDS = [("correct", pa.bool_()), ("exact_match", pa.float64()), ("f1", pa.float64()),
                 ("score_method", pa.string())]
_RUN_FIELDS = [("attempt", pa.int32()), ("seconds", pa.float64()), ("created_at", pa.string())]

# The layout of a trajectory record. Stores are keyed by it (stages/paths.py), so parts of two layouts
# never share a store: 2 stores each tool call and each SAG candidate, where 1 stored their counts.
TRAJECTORY_LAYOUT = 2

# What the reader of a trajectory wants to see of a step besides its text: each tool call with its
# arguments and what it returned (web_search: the passages), and on SAG steps every sampled candidate,
# with its output and the group it voted for (`vote`, None for an invalid one).
TOOL_CALL_TYPE = pa.struct([("name", pa.string()), ("arguments", pa.string()), ("result", pa.string()),
                            ("error", pa.string())])
CANDIDATE_TYPE = pa.struct([
    ("text", pa.string()), ("code", pa.string()), ("parse_error", pa.string()), ("stdout", pa.string()),
    ("error_type", pa.string()), ("error_message", pa.string()), ("final_answer", pa.string()),
    ("has_final_answer", pa.bool_()), ("executed", pa.bool_()), ("vote", pa.string()),
])
STEP_TYPE = pa.struct([
    ("index", pa.int32()), ("model_output", pa.string()), ("thought", pa.string()), ("code", pa.string()),
    ("parse_error", pa.string()), ("observation", pa.string()), ("stdout", pa.string()),
    ("error_type", pa.string()), ("error_message", pa.string()), ("final_answer", pa.string()),
    ("has_final_answer", pa.bool_()), ("tool_calls", pa.list_(TOOL_CALL_TYPE)), ("generation_seconds", pa.float64()),
    ("execution_seconds", pa.float64()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
    ("candidates", pa.list_(CANDIDATE_TYPE)), ("valid_candidates", pa.int32()), ("chosen", pa.int32()),
])
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

TRAJECTORY_SCHEMA = pa.schema([
    *_ITEM_FIELDS,
    ("model", pa.string()), ("prompt_version", pa.string()), ("sampling", pa.string()), ("sag", pa.string()),
    ("seed", pa.int64()), ("ftp_prefix", pa.string()),
    ("messages", pa.list_(MESSAGE_TYPE)), ("steps", pa.list_(STEP_TYPE)),
    ("final_answer", pa.string()), ("answered_by", pa.string()), ("forced_answer_output", pa.string()),
    ("context_exhausted", pa.string()),
    ("num_steps", pa.int32()), ("completion_tokens", pa.int64()), ("parse_errors", pa.int32()),
    ("execution_errors", pa.int32()),
    *_SCORE_FIELDS, *_RUN_FIELDS,
])

COT_SCHEMA = pa.schema([
    *_ITEM_FIELDS,
    ("model", pa.string()), ("prompt_version", pa.string()), ("sampling", pa.string()),
    ("system_prompt", pa.string()), ("response", pa.string()), ("answer", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int64()),
    *_SCORE_FIELDS, *_RUN_FIELDS,
])

# Added by the filter stage.
VERDICT_FIELDS = [("judge_correct", pa.bool_()), ("keep", pa.bool_()), ("drop_reason", pa.string())]


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _tool_call_row(call: dict) -> dict:
    return {"name": call.get("name"), "arguments": _json({"args": call.get("args"), "kwargs": call.get("kwargs")}),
            "result": None if "value" not in call else _json(call["value"]), "error": _text(call.get("error"))}


def _candidate_row(candidate: CandidateRecord) -> dict:
    error = candidate.error or {}
    return {"text": candidate.text, "code": candidate.code, "parse_error": candidate.parse_error,
            "stdout": candidate.stdout, "error_type": error.get("type"), "error_message": error.get("message"),
            "final_answer": _text(candidate.final_answer) if candidate.has_final_answer else None,
            "has_final_answer": candidate.has_final_answer, "executed": candidate.executed,
            "vote": ": ".join(vote_key(candidate)) if candidate.valid else None}


def _step_row(step: StepRecord) -> dict:
    error = step.error or {}
    return {
        "index": step.index, "model_output": step.model_output, "thought": step.thought, "code": step.code,
        "parse_error": step.parse_error, "observation": step.observation, "stdout": step.stdout,
        "error_type": error.get("type"), "error_message": error.get("message"),
        "final_answer": _text(step.final_answer) if step.has_final_answer else None,
        "has_final_answer": step.has_final_answer, "tool_calls": [_tool_call_row(c) for c in step.tool_calls],
        "generation_seconds": step.generation_seconds, "execution_seconds": step.execution_seconds,
        "prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
        "candidates": [_candidate_row(c) for c in step.candidates], "valid_candidates": step.valid_candidates,
        "chosen": step.chosen,
    }


def item_row(item: RolloutItem) -> dict:
    return {"dataset": item.dataset, "example_id": item.example_id, "sample": item.sample, "domain": item.domain,
            "question": item.question, "gold": item.gold, "aliases": list(item.aliases)}


def run_fields(attempt: int, seconds: float) -> dict:
    return {"attempt": attempt, "seconds": seconds, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def episode_row(item: RolloutItem, record: EpisodeRecord) -> dict:
    """A trajectory record without its score and run fields."""
    return {
        **item_row(item),
        "model": record.model, "prompt_version": record.prompt_version,
        "sampling": json.dumps(record.sampling), "sag": json.dumps(record.sag) if record.sag else None,
        "ftp_prefix": record.ftp_prefix,
        "messages": [{"role": m["role"], "content": m["content"]} for m in record.messages],
        "steps": [_step_row(s) for s in record.steps],
        "final_answer": record.final_answer, "answered_by": record.answered_by,
        "forced_answer_output": record.forced_answer_output, "context_exhausted": record.context_exhausted,
        "num_steps": len(record.steps),
        "completion_tokens": sum(s.completion_tokens for s in record.steps),
        "parse_errors": sum(s.parse_error is not None for s in record.steps),
        "execution_errors": sum(s.error is not None for s in record.steps),
    }
