"""LLM engines behind one protocol (see protocol.py)."""

from ray_distill.engines.protocol import (
    Completion, ContextLengthError, Engine, GenerationRequest, Sample, SamplingParams,
)

__all__ = ["Completion", "ContextLengthError", "Engine", "GenerationRequest", "Sample", "SamplingParams"]
