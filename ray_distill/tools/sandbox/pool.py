"""A pool of warm sandbox sessions.

Starting a sandbox costs ~0.5 s (numpy and sympy imports), so the pool
keeps `size` sessions started ahead of demand. A session serves exactly one
episode and is then destroyed, never reused: no state, file or process can
leak from one episode into the next. A session whose sandbox died is
simply replaced, so the pool stays up whatever the code did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Optional

from ray_distill.tools.sandbox.policy import SandboxPolicy
from ray_distill.tools.sandbox.session import IsolationRefused, SandboxError, SandboxSession, Toolbox

log = logging.getLogger(__name__)


class SandboxPool:
    def __init__(self, policy: SandboxPolicy = SandboxPolicy(), toolbox: Optional[Toolbox] = None, size: int = 2):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.policy = policy
        self.toolbox = toolbox
        self.size = size
        # Warm sessions, or the error of a start that failed (handed to a waiting acquire).
        self._warm: asyncio.Queue[SandboxSession | SandboxError] = asyncio.Queue()
        self._starting: set[asyncio.Task] = set()
        self._closed = False
        self.started = 0  # sessions started over the pool's life

    async def __aenter__(self) -> "SandboxPool":
        # The first session starts here, so a machine that cannot isolate sandboxes as the policy
        # demands fails the pool's owner at once (IsolationRefused) rather than each episode.
        if self.size:
            try:
                session = await SandboxSession.start(self.policy, self.toolbox)
            except IsolationRefused:
                raise
            except SandboxError as e:
                self._warm.put_nowait(e)
            else:
                self.started += 1
                self._warm.put_nowait(session)
        self._refill()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _refill(self) -> None:
        while not self._closed and self._warm.qsize() + len(self._starting) < self.size:
            task = asyncio.create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        try:
            session = await SandboxSession.start(self.policy, self.toolbox)
        except SandboxError as e:
            log.warning("sandbox failed to start: %s", e)
            self._warm.put_nowait(e)
            return
        self.started += 1
        if self._closed:
            await session.close()
        else:
            self._warm.put_nowait(session)

    async def acquire(self) -> SandboxSession:
        """A fresh session for one episode; release it when the episode ends."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if self.size == 0:
            self.started += 1
            return await SandboxSession.start(self.policy, self.toolbox)
        while True:
            self._refill()
            item = await self._warm.get()
            if isinstance(item, SandboxError):
                raise item
            if item.alive:
                self._refill()
                return item

    async def release(self, session: SandboxSession) -> None:
        await session.close()
        self._refill()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SandboxSession]:
        session = await self.acquire()
        try:
            yield session
        finally:
            await self.release(session)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        while not self._warm.empty():
            item = self._warm.get_nowait()
            if isinstance(item, SandboxSession):
                await item.close()

