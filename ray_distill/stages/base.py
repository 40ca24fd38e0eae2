"""What a pipeline stage is, and the run directory it works in."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ray_distill.config import ExperimentConfig


@dataclass(frozen=True)
class StageContext:
    config: ExperimentConfig
    run_dir: Path
    progress: bool = True


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline.

    `inputs` names the config sections whose values decide the stage's
    output: a finished stage reruns only when their fingerprint changes or
    `is_complete` finds its outputs gone.
    """

    name: str
    help: str
    inputs: tuple[str, ...]
    run: Callable[[StageContext], dict[str, Any]]
    is_complete: Callable[[StageContext], bool]

    def fingerprint(self, config: ExperimentConfig) -> str:
        payload = {section: asdict(getattr(config, section)) for section in self.inputs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
