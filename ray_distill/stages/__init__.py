"""The pipeline: stages around one run layout (`paths.py`), the services they share (`services.py`),
and the driver that runs them in order (`pipeline.py`). A stage imports those, never another stage;
`load` finds one by name (the names and their help are in `ray_distill.registry`)."""

import importlib

from ray_distill.registry import STAGES
from ray_distill.stages.base import Stage


def load(name: str) -> Stage:
    """The stage called `name`, imported on first use: a stage pulls in what it runs on (Ray, DeepSpeed)."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    return importlib.import_module(f"ray_distill.stages.{name}").STAGE
