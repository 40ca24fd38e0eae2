"""What a pipeline stage is, and the run directory it works in."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, TextIO

from ray_distill.config import ExperimentConfig


class Services:
    """Long-lived services (engine replicas, the retrieval service) shared by the stages of one
    pipeline run, so that `cot` and `generate` load the teacher once; closed when the run ends."""

    def __init__(self) -> None:
        self._open: dict[Hashable, tuple[Any, Callable[[Any], None]]] = {}

    def get(self, key: Hashable, start: Callable[[], Any], close: Callable[[Any], None]) -> Any:
        if key not in self._open:
            self._open[key] = (start(), close)
        return self._open[key][0]

    def close(self, kind: Optional[str] = None) -> None:
        """Close every service, or those whose key starts with `kind` (e.g. "engine")."""
        for key in [k for k in reversed(self._open) if kind is None or (isinstance(k, tuple) and k[0] == kind)]:
            service, close = self._open.pop(key)
            try:
                close(service)
            except Exception:  # the others must still be closed
                logging.getLogger(__name__).exception("closing %s failed", key)


@dataclass(frozen=True)
class StageContext:
    config: ExperimentConfig
    run_dir: Path
    progress: bool = True
    # Where progress bars are drawn (None: stderr): the terminal, while a pipeline command's own stdout and
    # stderr go to the run's log file (cli/console.py).
    console: Optional[TextIO] = field(default=None, compare=False)
    services: Services = field(default_factory=Services, compare=False)

    def __post_init__(self) -> None:
        # Absolute from the start, so every path a stage derives and hands to a Ray actor or worker is
        # too: Ray Train and Tune run their workers in folders of their own, where a relative run.dir
        # (the quickstart's) would put the step log and TensorBoard events outside the run.
        object.__setattr__(self, "run_dir", Path(os.path.abspath(self.run_dir)))


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline.

    `inputs` names the config sections whose values decide the stage's
    output: a finished stage reruns only when their fingerprint changes or
    `is_complete` finds its outputs gone. `outputs` lists the directories it
    writes (default `<run.dir>/<name>`), which go to `run.storage`. `check`
    refuses, before the pipeline starts, a config the stage cannot run.
    """

    name: str  # as in `ray_distill.registry`, which holds its help
    inputs: tuple[str, ...]
    run: Callable[[StageContext], dict[str, Any]]
    is_complete: Callable[[StageContext], bool]
    outputs: Optional[Callable[[StageContext], list[Path]]] = None
    tensorboard: bool = False  # writes TensorBoard events under its outputs
    # Whether the pipeline copies its outputs to `run.storage` every `run.storage_interval` seconds while it
    # runs, not only at the end: off where other processes write the storage meanwhile (the sweep's trials).
    copied_while_running: bool = True
    # Raises UserError for a config this stage would fail on, from the config alone; the pipeline checks
    # every stage it runs before the first starts, so no failure waits behind hours of earlier stages.
    check: Optional[Callable[[ExperimentConfig], None]] = None
    # The stage's summary in a few words, for the console line that says it is done (the manifest keeps
    # the summary in full).
    headline: Optional[Callable[[dict[str, Any]], str]] = None

    def output_dirs(self, ctx: StageContext) -> list[Path]:
        return self.outputs(ctx) if self.outputs else [ctx.run_dir / self.name]

    def fingerprint(self, config: ExperimentConfig) -> str:
        payload = {section: asdict(getattr(config, section)) for section in self.inputs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
