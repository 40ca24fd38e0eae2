"""Micro-batching for asyncio callers: concurrent requests share one batch call.

Callers `submit` items; a worker on the callers' event loop groups what is
waiting (up to `max_batch` by weight) and runs `process` on the group, with
at most `in_flight` groups running at once. While every slot is busy, new
items wait and join the next group, so batches grow with load and a lone
request goes out at once.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, process: Callable[[list[T]], Awaitable[list[R]]], max_batch: int,
                 weight: Callable[[T], int] = lambda _: 1, in_flight: int = 2):
        self.process, self.max_batch, self.weight, self.in_flight = process, max_batch, weight, in_flight
        self._queue: Optional[asyncio.Queue] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._worker: Optional[asyncio.Task] = None
        self._tasks: set[asyncio.Task] = set()  # asyncio holds tasks weakly
        self.batches = 0  # groups processed, for tests and stats

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker.done():  # a new event loop (e.g. another asyncio.run) gets its own worker
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        future = loop.create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        slots = asyncio.Semaphore(self.in_flight)
        while True:
            batch = [await queue.get()]
            await slots.acquire()  # while all slots are busy, more items arrive and join this batch
            size = self.weight(batch[0][0])
            while not queue.empty() and size + self.weight(queue._queue[0][0]) <= self.max_batch:
                batch.append(queue.get_nowait())
                size += self.weight(batch[-1][0])
            task = asyncio.get_running_loop().create_task(self._finish(batch))
            self._tasks.add(task)
            task.add_done_callback(lambda done: (slots.release(), self._tasks.discard(done)))

    async def _finish(self, batch: list) -> None:
        self.batches += 1
        try:
            results = await self.process([item for item, _ in batch])
        except Exception as e:  # the whole group failed: every caller in it learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
