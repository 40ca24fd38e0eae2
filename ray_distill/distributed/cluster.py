"""Connect to a Ray cluster, or start a local one bound to loopback."""

from __future__ import annotations

import logging
import os
from typing import Optional

import ray

from ray_distill.errors import UserError

log = logging.getLogger(__name__)

_STARTED_LOCALLY = False

# Options for a long-lived service actor. Code running in a Tune trial runs in the trial's placement group, and
# Ray would place the actors it starts in that group too, which holds only the trial's driver; the service
# reserves its own resources instead.
OWN_PLACEMENT = {"scheduling_strategy": "DEFAULT"}


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, **kwargs) -> None:
    """`address` (or $RAY_ADDRESS) joins an existing cluster, e.g. under
    `ray job submit`; otherwise a local Ray starts with every port on
    loopback and no dashboard unless asked for."""
    # Where stdout is not a terminal, as it is not while a pipeline command's output goes to the run's log
    # file (cli/console.py), Ray Data logs each dataset's progress, a dozen lines every 10 s; the stage draws
    # a bar of its own, so the log gets them once a minute. Read when this process first runs a dataset.
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "60")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, **kwargs)
        log.info("joined the Ray cluster at %s (dashboard: %s, %s)", address, context.dashboard_url or "off",
                 {k: v for k, v in sorted(ray.cluster_resources().items())
                  if not k.startswith("node:") and k not in ("memory", "object_store_memory")})
        return
    # Ray binds its local ports to loopback only with this set (measured on Ray 2.60).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs.setdefault("include_dashboard", False)
    ray.init(num_cpus=num_cpus, **kwargs)
    global _STARTED_LOCALLY
    _STARTED_LOCALLY = True


def started_locally() -> bool:
    """Whether this process started its own Ray (a fixed set of resources, no autoscaler)."""
    return _STARTED_LOCALLY


def require_resources(plan: dict[str, tuple[float, float]], custom: Optional[dict[str, dict[str, float]]] = None) -> None:
    """On a Ray this process started (fixed resources, no autoscaler), work that does not fit would
    wait forever: `plan` maps what asks to its (CPUs, GPUs), `custom` a setting to the custom resources
    it asks for, and a shortfall is named instead. A cluster with an autoscaler adds nodes."""
    init_ray()
    if not started_locally():
        return
    have = ray.cluster_resources()
    for n, unit in ((0, "CPU"), (1, "GPU")):
        wanted = sum(v[n] for v in plan.values())
        if wanted > have.get(unit, 0) + 1e-9:
            parts = ", ".join(f"{k} = {v[n]:g}" for k, v in plan.items() if v[n])
            raise UserError(f"the stage needs {wanted:g} {unit}s ({parts}) but this machine's Ray has "
                            f"{have.get(unit, 0):g}; lower those settings")
    for setting, resources in (custom or {}).items():
        missing = sorted(name for name, amount in resources.items() if amount > 0 and name not in have)
        if missing:
            raise UserError(f"{setting} asks for the Ray resource(s) {', '.join(missing)}, which this machine's Ray "
                            "does not have (they name node types of a cluster); remove them to run here")
