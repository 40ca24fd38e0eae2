"""How this process computes: one thread for CPU-heavy torch work, and the dtype to use.

One thread per process for CPU-heavy torch work (engine batches, query encoding):

torch already spreads each op over every core; two such ops running at once
from different threads oversubscribe the cores, and OpenMP's spinning
threads then slow both down several-fold (measured: a 2-core machine ran
concurrent episodes slower than sequential ones). Queueing them on one
thread keeps every op at full speed while the event loop stays free.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-distill-compute")


async def run_compute(fn: Callable[..., T], *args) -> T:
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn, *args)


def default_dtype(device):
    """bfloat16 where the hardware computes it natively (GPUs, CPUs with AMX or AVX512-BF16), else
    float32: on such CPUs bfloat16 runs models 2-3x faster (measured: transformer prefill, MiniLM)."""
    import torch  # local: ray_distill.config imports this module, and the fast commands must not load torch

    if torch.device(device).type == "cuda":
        return torch.bfloat16
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return torch.float32
    return torch.bfloat16 if " amx_bf16" in flags or " avx512_bf16" in flags else torch.float32
