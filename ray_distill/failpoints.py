"""Kill points: named places where the chaos tests SIGKILL a component, deterministically.

A fail point (as in FreeBSD's fail(9) or TiKV's fail-rs) is a call at a fixed place in a
component's code: `kill_point("engine.generate")` in the engine replica, for example. It
does nothing unless armed through the environment:

    RAY_DISTILL_KILL_AT="engine.generate@3"   # the 3rd pass through that point, in a process
    RAY_DISTILL_KILL_DIR=/some/dir            # where fired points leave their marker

The process that makes the n-th pass kills itself, or with `group` the process group it
owns: the host of a sandbox kills the sandbox's whole process tree at once, since a state
holder left alive for the moments its parent takes to die could still answer the step. A
point fires once per run, not once per process: the first to fire creates `KILL_DIR/<name>`
exclusively and writes the killed pid there, so a component that Ray restarts does not die
again at its own n-th pass, and a test can check that the kill happened. A local Ray
cluster's workers inherit the environment of the driver that starts it, which is how the
tests arm points in every component.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Optional

ARM = "RAY_DISTILL_KILL_AT"
MARKERS = "RAY_DISTILL_KILL_DIR"

_armed: Optional[dict[str, int]] = None
_passes: Counter = Counter()
_lock = threading.Lock()


def armed() -> dict[str, int]:
    """This process's armed points: name -> the pass that fires it (read once)."""
    global _armed
    if _armed is None:
        points = {}
        for entry in filter(None, (part.strip() for part in os.environ.get(ARM, "").split(","))):
            name, at, count = entry.partition("@")
            if not at or not count.isdigit() or int(count) < 1:
                raise ValueError(f"{ARM}: {entry!r} is not NAME@N with N >= 1")
            points[name] = int(count)
        if points and not os.environ.get(MARKERS):
            raise ValueError(f"{ARM} is set but {MARKERS} is not: fired points need a marker directory")
        _armed = points
    return _armed


def kill_point(name: str, group: Optional[int] = None) -> None:
    """Pass the point `name`; on its armed pass, SIGKILL this process (or every process of `group`)."""
    points = armed()
    if name not in points:
        return
    with _lock:
        _passes[name] += 1
        if _passes[name] != points[name]:
            return
    victim = group or os.getpid()
    try:
        fd = os.open(Path(os.environ[MARKERS]) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # fired already, in the process this one replaces
        return
    with os.fdopen(fd, "w") as marker:
        marker.write(f"{victim}\n")
    (os.killpg if group else os.kill)(victim, signal.SIGKILL)
