"""Connect to a Ray cluster, or start a local one bound to loopback."""

from __future__ import annotations

import os
from typing import Optional

_STARTED_LOCALLY = False


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, **kwargs) -> None:
    """`address` (or $RAY_ADDRESS) joins an existing cluster, e.g. under
    `ray job submit`; otherwise a local Ray starts with every port on
    loopback and no dashboard unless asked for."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
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
