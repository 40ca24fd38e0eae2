"""Which engine to build: a picklable description, so a Ray actor on another
node can build the engine where the GPUs are."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ray_distill.engines.protocol import Engine

# Backend -> its engine class, imported when a replica builds it: vLLM and the OpenAI client stay optional,
# and the world oracle (which writes the agent's actions, so it lives with the agent) is named here
# without the engines depending on the agent.
_CLASSES = {
    "hf": "ray_distill.engines.hf:HFEngine",
    "vllm": "ray_distill.engines.vllm:VLLMEngine",
    "openai": "ray_distill.engines.openai:OpenAIEngine",
    "oracle": "ray_distill.agent.oracle:WorldOracleEngine",
}
BACKENDS = tuple(_CLASSES)


@dataclass(frozen=True)
class EngineSpec:
    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)  # backend keyword arguments

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {self.backend!r}; known: {', '.join(BACKENDS)}")

    def build(self) -> Engine:
        module, name = _CLASSES[self.backend].split(":")
        return getattr(importlib.import_module(module), name)(self.model, **self.options)
