"""Host side of a sandbox session: start the worker, run code, serve its tool calls.

One session is one episode's interpreter: variables persist across `run`
calls. `run_candidates` executes several code blocks on copies of the
current state (SAG) and `choose` keeps one of them. Everything is asyncio,
so one process drives many sessions, and tool calls from inside the
sandbox (web_search) are awaited on the host while the code waits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Protocol, Sequence

from ray_distill.failpoints import kill_point
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
# How often the host checks a session's working directory against the policy's disk limits.
WATCH_SECONDS = 0.25
logger = logging.getLogger(__name__)
_warned: set[str] = set()


class Sandbox(Protocol):
    """What an episode needs from its interpreter session, local or remote."""

    async def run(self, code: str) -> "ExecResult": ...

    async def run_candidates(self, codes: Sequence[str]) -> list["ExecResult"]: ...

    async def choose(self, index: Optional[int]) -> Optional[int]: ...


class SandboxError(RuntimeError):
    """The sandbox process itself failed (not the user's code): the session is gone."""


class IsolationRefused(SandboxError):
    """The kernel cannot give sandboxes their whole OS boundary here and the policy refuses less."""


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


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    """The host's package directories, which the worker (run with -I) adds to its path. Only
    directories named like package directories: never the project's checkout, which may hold runs."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"]] + [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    return tuple(dict.fromkeys(os.path.realpath(d) for d in dirs if os.path.isdir(d)))


@functools.cache
def _read_roots() -> tuple[str, ...]:
    """What the sandbox may read of the interpreter: its standard library and package directories."""
    paths = sysconfig.get_paths()
    stdlib = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib")}
    return (*sorted(r for r in stdlib if os.path.isdir(r)), *_site_dirs())


@functools.cache
def _interpreter_world_readable() -> bool:
    return all(oslimits.world_readable(Path(p)) for p in [sys.executable, *_read_roots()])


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


def check_isolation(isolation: dict, policy: SandboxPolicy) -> None:
    """Refuse (IsolationRefused) or warn, once per process, about the parts of the OS boundary a
    session reports missing, as `policy.weak_isolation` says."""
    missing = isolation.get("missing") or []
    if not missing:
        return
    detail = "; ".join(f"{key}: {isolation.get(key)}" for key in missing)
    if policy.weak_isolation == "refuse":
        raise IsolationRefused(f"this machine cannot give sandboxes their OS boundary ({detail}); "
                               "set rollout.sandbox_isolation: warn to run them with less isolation")
    if detail not in _warned:
        _warned.add(detail)
        logger.warning("sandboxes run with less isolation than they should: %s", detail)


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
        self.failure: Optional[str] = None  # why the host ended the session, if it did
        self._watch: Optional[asyncio.Task] = None

    @classmethod
    async def start(cls, policy: SandboxPolicy = SandboxPolicy(), toolbox: Optional[Toolbox] = None) -> "SandboxSession":
        work_dir = oslimits.make_work_dir()
        # A uid of its own: RLIMIT_NPROC then counts only this session's
        # processes, and the host's files are not its files.
        uid = oslimits.private_uid()
        if uid is not None:
            os.chown(work_dir, uid, uid)
        cgroup = oslimits.create_pids_cgroup(policy.processes)
        config = {
            "work_dir": work_dir,
            "host_pid": os.getpid(),
            "uid": uid,
            "gid": uid,
            "user_namespaces": policy.user_namespaces,
            "python_layers": policy.python_layers,
            "interpreter_world_readable": _interpreter_world_readable(),
            "site_dirs": _site_dirs(),
            "limits": {
                "memory_bytes": policy.memory_bytes,
                "cpu_seconds": policy.cpu_seconds,
                "processes": policy.processes,
                "file_size_bytes": policy.file_size_bytes,
                "open_files": policy.open_files,
            },
            "allowed_imports": list(policy.allowed_imports),
            "preload": list(policy.preload),
            "read_roots": _read_roots(),
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
        if not isinstance(ready, dict) or not isinstance(ready.get("isolation"), dict):
            await session.close()
            raise SandboxError("sandbox worker sent a malformed ready message")
        session.isolation = ready["isolation"]
        try:
            check_isolation(session.isolation, policy)
        except IsolationRefused:
            await session.close()
            raise
        session._watch = asyncio.create_task(session._watch_disk())
        return session

    @property
    def work_dir(self) -> str:
        return self._work_dir

    @property
    def pid(self) -> int:
        """The worker process the host started (the session's process group)."""
        return self._proc.pid

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
            chosen = reply.get("index")
            if reply.get("op") != "chosen" or not (chosen is None or chosen == index):
                await self._malformed("a reply to choose")
            return chosen

    async def _step(self, request: dict) -> list[ExecResult]:
        async with self._lock:
            calls: list[list[dict]] = [[] for _ in request["codes"]]
            pending: set[asyncio.Task] = set()
            made = [0] * len(calls)  # tool calls per candidate
            limit_error = f"ToolLimit: more than {self.policy.tool_calls_per_step} tool calls in one step of the code"
            # Before the request: a worker killed after it could have written its reply, which stays readable
            # in the pipe, and the step would then succeed.
            kill_point("sandbox.step", group=self.pid)
            self._send({**request, "timeout": self.policy.timeout_seconds})
            deadline = time.monotonic() + self.policy.timeout_seconds + 10
            try:
                while True:
                    message = await self._recv_within(deadline - time.monotonic())
                    if message.get("op") == "results":
                        break
                    if not self._valid_tool_call(message, len(calls)):
                        await self._malformed(f"message {str(message.get('op'))[:40]!r}")
                    index = message["candidate"]
                    made[index] += 1
                    record = {"name": message["name"], "args": message["args"], "kwargs": message["kwargs"]}
                    if made[index] > self.policy.tool_calls_per_step:
                        # Past the limit a call fails in the code; a flood that ignores the failures
                        # (forged calls need no reply) ends the session before it can bury the host.
                        if made[index] > 2 * self.policy.tool_calls_per_step:
                            await self._malformed(f"tool calls past twice the limit of {self.policy.tool_calls_per_step}")
                        if made[index] == self.policy.tool_calls_per_step + 1:
                            calls[index].append({**record, "error": limit_error})
                        self._send({"op": "tool_result", "candidate": index, "error": limit_error})
                        continue
                    calls[index].append(record)
                    task = asyncio.create_task(self._serve_tool(message, record))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                for task in pending:
                    task.cancel()
            results = message.get("results")
            if not isinstance(results, list) or len(results) != len(request["codes"]):
                await self._malformed("results")
            return [self._result(r, calls[i]) for i, r in enumerate(results)]

    def _result(self, raw: Any, calls: list[dict]) -> ExecResult:
        """An ExecResult from what the worker sent, which agent code may have forged: every field checked."""
        if not isinstance(raw, dict):
            raw = {}
        error = raw.get("error")
        if error is not None and not (isinstance(error, dict) and isinstance(error.get("type"), str)
                                      and isinstance(error.get("message"), str)):
            error = {"type": "ProtocolError", "message": "the sandbox sent a malformed error"}
        stdout = raw.get("stdout")
        answer = raw.get("final_answer")
        seconds = raw.get("seconds")
        return ExecResult(
            stdout=stdout[: self.policy.output_limit] if isinstance(stdout, str) else "",
            error=None if error is None else {k: v for k, v in error.items() if k in ("type", "message", "line", "source")},
            final_answer=answer if isinstance(answer, (str, int, float, bool)) or answer is None else str(answer),
            has_final_answer=raw.get("has_final_answer") is True,
            truncated=raw.get("truncated") is True,
            killed=raw.get("killed") is True,
            seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
            tool_calls=calls,
        )

    async def _malformed(self, what: str) -> None:
        self.failure = f"the sandbox sent malformed {what}"
        await self.close()
        raise SandboxError(self.failure)

    def _valid_tool_call(self, message: dict, candidates: int) -> bool:
        index = message.get("candidate")
        return (message.get("op") == "tool_call" and isinstance(index, int) and 0 <= index < candidates
                and self.toolbox is not None and message.get("name") in self.toolbox.names
                and isinstance(message.get("args"), list)
                and isinstance(message.get("kwargs"), dict))

    async def _serve_tool(self, message: dict, record: dict) -> None:
        reply: dict[str, Any] = {"op": "tool_result", "candidate": message["candidate"]}
        try:  # a valid call names one of the toolbox's tools, so there is a toolbox
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
                await self._malformed(f"an oversized message ({size} bytes)")
            message = json.loads(await self._proc.stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            await self.close()
            raise SandboxError(self.failure or "the sandbox process exited") from None
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, integers past Python's digit limit
            await self._malformed(f"a message that is not JSON ({type(e).__name__})")
        if not isinstance(message, dict):
            await self._malformed("a message that is not an object")
        return message

    async def _recv_within(self, seconds: float) -> dict:
        try:
            return await asyncio.wait_for(self._recv(), max(seconds, 0.0))
        except asyncio.TimeoutError:
            await self.close()
            raise SandboxError("the sandbox stopped responding and was killed") from None

    async def _watch_disk(self) -> None:
        """End the session once its working directory outgrows the policy: agent code may write
        there between steps too (a thread or a process it left running)."""
        while not self.closed:
            await asyncio.sleep(WATCH_SECONDS)
            # In a thread: walking thousands of entries must not stall the other episodes on this loop.
            problem = await asyncio.to_thread(oslimits.disk_problem, self._work_dir, self.policy.disk_bytes,
                                              self.policy.disk_files)
            if problem and not self.closed:
                self.failure = f"the sandbox was stopped: {problem}"
                await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._uid is not None:
            oslimits.kill_uid(self._uid)
        if self._cgroup is not None:
            oslimits.remove_cgroup(self._cgroup)
        await self._proc.wait()
        oslimits.remove_tree(self._work_dir)

