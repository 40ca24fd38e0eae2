"""One thread per process for CPU-heavy torch work (engine batches, query encoding).

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
