"""Which engine to build: a picklable description, so a Ray actor on another
node can build the engine where the GPUs are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ray_distill.engines.protocol import Engine

BACKENDS = ("hf", "vllm", "openai", "oracle")


@dataclass(frozen=True)
class EngineSpec:
    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)  # backend keyword arguments

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {self.backend!r}; known: {', '.join(BACKENDS)}")

    def build(self) -> Engine:
        if self.backend == "hf":
            from ray_distill.engines.hf import HFEngine

            return HFEngine(self.model, **self.options)
        if self.backend == "openai":
            from ray_distill.engines.openai import OpenAIEngine

            return OpenAIEngine(self.model, **self.options)
        if self.backend == "oracle":
            from ray_distill.engines.oracle import WorldOracleEngine

            return WorldOracleEngine(self.model, **self.options)
        from ray_distill.engines.vllm import VLLMEngine

        return VLLMEngine(self.model, **self.options)
