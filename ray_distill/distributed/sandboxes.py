"""A sandbox pool as a Ray actor, and the session proxy the agent uses.

The sandboxes (and the tools they call back into) live in the actor, on
whichever node has the CPUs; agents anywhere in the cluster hold a
`RemoteSandboxSession`, which behaves like a local SandboxSession.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import ray

from ray_distill.tools.sandbox import ExecResult, SandboxError, SandboxPolicy, SandboxPool


@ray.remote
class SandboxPoolActor:
    def __init__(self, policy: SandboxPolicy, toolbox_spec=None, size: int = 2):
        # toolbox_spec: anything with build() -> Toolbox (e.g. RetrievalToolSpec),
        # built here so the tools run next to the sandboxes.
        self._policy = policy
        self._toolbox = toolbox_spec.build() if toolbox_spec is not None else None
        self._size = size
        self._pool: Optional[SandboxPool] = None
        self._sessions: dict[str, object] = {}
        self._ids = itertools.count()

    async def _ready_pool(self) -> SandboxPool:
        if self._pool is None:  # needs the actor's running event loop
            self._pool = SandboxPool(self._policy, self._toolbox, self._size)
            await self._pool.__aenter__()
        return self._pool

    async def open(self) -> str:
        session = await (await self._ready_pool()).acquire()
        sid = f"s{next(self._ids)}"
        self._sessions[sid] = session
        return sid

    def _get(self, sid: str):
        if sid not in self._sessions:
            raise SandboxError(f"no open sandbox session {sid!r}")
        return self._sessions[sid]

    async def run(self, sid: str, code: str) -> ExecResult:
        return await self._get(sid).run(code)

    async def run_candidates(self, sid: str, codes: Sequence[str]) -> list[ExecResult]:
        return await self._get(sid).run_candidates(codes)

    async def choose(self, sid: str, index: Optional[int]) -> Optional[int]:
        return await self._get(sid).choose(index)

    async def close(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            await self._pool.release(session)

    async def stats(self) -> dict:
        return {"open": len(self._sessions), "started": self._pool.started if self._pool else 0}


class RemoteSandboxSession:
    """One episode's sandbox session, held by a SandboxPoolActor."""

    def __init__(self, actor, sid: str):
        self._actor = actor
        self._sid = sid

    @classmethod
    async def open(cls, actor) -> "RemoteSandboxSession":
        return cls(actor, await actor.open.remote())

    async def run(self, code: str) -> ExecResult:
        return await self._actor.run.remote(self._sid, code)

    async def run_candidates(self, codes: Sequence[str]) -> list[ExecResult]:
        return await self._actor.run_candidates.remote(self._sid, list(codes))

    async def choose(self, index: Optional[int]) -> Optional[int]:
        return await self._actor.choose.remote(self._sid, index)

    async def close(self) -> None:
        await self._actor.close.remote(self._sid)
