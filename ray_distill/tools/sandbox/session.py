"""Host side of a sandbox session: start the worker, run code, serve its tool calls.

One session is one episode's interpreter: variables persist across `run`
calls. `run_candidates` executes several code blocks on copies of the
current state (SAG) and `choose` keeps one of them. Everything is asyncio,
so one process drives many sessions, and tool calls from inside the
sandbox (web_search) are awaited on the host while the code waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Protocol, Sequence

from ray_distill.tools.sandbox import oslimits, worker
from ray_distill.tools.sandbox.policy import SandboxPolicy

# A tool call from sandboxed code: (name, args, kwargs) -> JSON-able value.
ToolHandler = Callable[[str, list, dict], Awaitable[Any]]


@dataclass(frozen=True)
class Toolbox:
    """The functions sandboxed code can call; each call is served on the host."""

    handler: ToolHandler
    names: tuple[str, ...] = ("web_search",)

_WORKER = Path(worker.__file__)
_HEADER = worker._HEADER


class Sandbox(Protocol):
    """What an episode needs from its interpreter session, local or remote."""

    async def run(self, code: str) -> "ExecResult": ...

    async def run_candidates(self, codes: Sequence[str]) -> list["ExecResult"]: ...

    async def choose(self, index: Optional[int]) -> Optional[int]: ...


class SandboxError(RuntimeError):
    """The sandbox process itself failed (not the user's code): the session is gone."""


class ToolUnavailable(RuntimeError):
    """A tool's backend failed (a dead retrieval service, a timeout), not the code's call of it.
    The code still sees the error, and the call is marked `unavailable` so the episode can be
    retried instead of trained on."""


@dataclass
class ExecResult:
    stdout: str
    error: Optional[dict] = None  # {"type", "message", "line"?, "source"?}
    final_answer: Any = None
    has_final_answer: bool = False
    truncated: bool = False
    killed: bool = False  # stopped by a timeout, a limit or a crash: its state is gone
    seconds: Optional[float] = None
    tool_calls: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return sorted(r for r in roots if os.path.isdir(r)) + ["/dev/null", "/dev/urandom", "/usr/share/zoneinfo"]


def _scrubbed_env(work_dir: str) -> dict[str, str]:
    # Nothing from the host's environment: no tokens, keys or proxies.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": work_dir,
        "TMPDIR": work_dir,
        "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }


class SandboxSession:
    def __init__(self, proc: asyncio.subprocess.Process, work_dir: str, uid: Optional[int],
                 cgroup: Optional[Path], policy: SandboxPolicy, toolbox: Optional[Toolbox]):
        self._proc = proc
        self._work_dir = work_dir
        self._uid = uid
        self._cgroup = cgroup
        self.policy = policy
        self.toolbox = toolbox
        self.isolation: dict = {}
        self._lock = asyncio.Lock()
        self.closed = False

    @classmethod
    async def start(cls, policy: SandboxPolicy = SandboxPolicy(), toolbox: Optional[Toolbox] = None) -> "SandboxSession":
        work_dir = oslimits.make_work_dir()
        read_roots = _read_roots()
        # A uid of its own: RLIMIT_NPROC then counts only this session's
        # processes, and the host's files are not its files.
        uid = oslimits.private_uid(read_roots) if policy.private_uid else None
        if uid is not None:
            os.chown(work_dir, uid, uid)
        cgroup = oslimits.create_pids_cgroup(policy.processes)
        config = {
            "work_dir": work_dir,
            "uid": uid,
            "gid": uid,
            "isolate_network": policy.isolate_network,
            "limits": {
                "memory_bytes": policy.memory_bytes,
                "cpu_seconds": policy.cpu_seconds,
                "processes": policy.processes,
                "file_size_bytes": policy.file_size_bytes,
                "open_files": policy.open_files,
            },
            "allowed_imports": list(policy.allowed_imports),
            "preload": list(policy.preload),
            "read_roots": read_roots,
            "cgroup": str(cgroup) if cgroup else None,
            "tools": list(toolbox.names) if toolbox else [],
            "output_limit": policy.output_limit,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(_WORKER), json.dumps(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=_scrubbed_env(work_dir), cwd=work_dir, start_new_session=True, limit=worker.MAX_MESSAGE_BYTES,
        )
        session = cls(proc, work_dir, uid, cgroup, policy, toolbox)
        try:
            ready = await asyncio.wait_for(session._recv(), policy.startup_timeout_seconds)
        except (asyncio.TimeoutError, SandboxError) as e:
            await session.close()
            raise SandboxError(f"sandbox worker did not start: {e or 'timed out'}") from None
        except BaseException:  # cancelled: leave no process behind
            await session.close()
            raise
        session.isolation = ready["isolation"]
        return session

    @property
    def alive(self) -> bool:
        return not self.closed and self._proc.returncode is None

    async def run(self, code: str) -> ExecResult:
        """Run one code block in the session; its variables persist."""
        reply = await self._step({"op": "run", "codes": [code], "auto_adopt": True})
        return reply[0]

    async def run_candidates(self, codes: Sequence[str]) -> list[ExecResult]:
        """Run each block on its own copy of the current state; then call `choose`."""
        if not codes:
            raise ValueError("run_candidates needs at least one code block")
        return await self._step({"op": "run", "codes": list(codes), "auto_adopt": False})

    async def choose(self, index: Optional[int]) -> Optional[int]:
        """Keep candidate `index`'s state as the session's (None: keep the state from before).
        Returns the index adopted, or None if the state stayed as it was."""
        async with self._lock:
            self._send({"op": "choose", "index": index})
            reply = await self._recv_within(self.policy.timeout_seconds + 10)
            return reply["index"]

    async def _step(self, request: dict) -> list[ExecResult]:
        async with self._lock:
            calls: list[list[dict]] = [[] for _ in request["codes"]]
            pending: set[asyncio.Task] = set()
            self._send({**request, "timeout": self.policy.timeout_seconds})
            deadline = time.monotonic() + self.policy.timeout_seconds + 10
            try:
                while True:
                    message = await self._recv_within(deadline - time.monotonic())
                    if message["op"] == "results":
                        break
                    if message["op"] != "tool_call":
                        raise SandboxError(f"unexpected message {message['op']!r} from the sandbox")
                    record = {"name": message["name"], "args": message["args"], "kwargs": message["kwargs"]}
                    calls[message["candidate"]].append(record)
                    task = asyncio.create_task(self._serve_tool(message, record))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                for task in pending:
                    task.cancel()
            return [ExecResult(**r, tool_calls=calls[i]) for i, r in enumerate(message["results"])]

    async def _serve_tool(self, message: dict, record: dict) -> None:
        reply: dict[str, Any] = {"op": "tool_result", "candidate": message["candidate"]}
        if self.toolbox is None:
            reply["error"] = f"no tools are available in this session (called {message['name']})"
        else:
            try:
                reply["value"] = await self.toolbox.handler(message["name"], message["args"], message["kwargs"])
            except Exception as e:  # the tool's failure is the code's observation
                reply["error"] = f"{type(e).__name__}: {e}"
                if isinstance(e, ToolUnavailable):
                    record["unavailable"] = True
        record["error" if "error" in reply else "value"] = reply.get("error", reply.get("value"))
        if self.alive:
            self._send(reply)

    def _send(self, message: dict) -> None:
        if not self.alive:
            raise SandboxError("the sandbox session is closed")
        self._proc.stdin.write(worker.frame(message))

    async def _recv(self) -> dict:
        try:
            header = await self._proc.stdout.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > worker.MAX_MESSAGE_BYTES:
                raise SandboxError(f"sandbox sent an oversized message ({size} bytes)")
            return json.loads(await self._proc.stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            await self.close()
            raise SandboxError("the sandbox process exited") from None
        except json.JSONDecodeError as e:
            await self.close()
            raise SandboxError(f"the sandbox sent a malformed message: {e}") from None

    async def _recv_within(self, seconds: float) -> dict:
        try:
            return await asyncio.wait_for(self._recv(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            await self.close()
            raise SandboxError("the sandbox stopped responding and was killed") from None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._uid is not None:
            oslimits.kill_uid(self._uid)
        if self._cgroup is not None:
            oslimits.remove_cgroup(self._cgroup)
        await self._proc.wait()
        shutil.rmtree(self._work_dir, ignore_errors=True)

