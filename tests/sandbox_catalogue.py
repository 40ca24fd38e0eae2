"""The hostile catalogue: agent code that tries to get out of its sandbox, run with the Python layers
switched off (`SandboxPolicy(python_layers=False)`), so that only the OS boundary stands.

After every case the runner checks what the boundary promises: nothing outside the working
directory written or read (a planted run directory with a secret, a canary path), no process
started by exec, no connection to the host's loopback services (TCP, a unix socket standing in for
Ray's, an abstract one), the host, a sibling session and the pool alive, and nothing of the case's
session left running. `tests/test_sandbox_boundary.py` runs it as root and, through this file's
command line, as an unprivileged user with and without user namespaces.

    python tests/sandbox_catalogue.py --out results.json [--no-user-namespaces]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ray_distill.tools.sandbox import SandboxError, SandboxPolicy, SandboxPool, SandboxSession

CASE_SECONDS = 20.0  # each case's own wall-clock limit, the session's start and checks included
# What a case may take on disk past the policy's disk_bytes: what it writes between two of the
# watchdog's checks, and the machine's own writes meanwhile.
DISK_SLACK = 512 << 20


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    code: str


# Placeholders, filled per run: HOST_PID, SIBLING_PID, VICTIM, SECRET_PATH, CANARY, TCP_PORT, UNIX_PATH, ABSTRACT.
SUBCLASSES = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__"
TOUCH = "touch CANARY"
FORGE = "import os, struct\ndef forge(body):\n    os.write(1, struct.pack('>I', len(body)) + body)\n"

CASES = [
    # dunder and frame walks
    Case("os.system via __subclasses__", "dunder", f"{SUBCLASSES}['system']('{TOUCH}')"),
    Case("execv via __subclasses__", "dunder", f"g = {SUBCLASSES}\ng['execv']('/bin/sh', ['sh', '-c', '{TOUCH}'])"),
    Case("frame walk to the worker's globals, then switch its guard off", "dunder",
         "import sys\nf = sys._getframe()\nwhile f.f_back:\n    f = f.f_back\ng = f.f_globals\n"
         "if '_internal' in g:\n    g['_internal'][0] = 1\nimport os\nos.system('" + TOUCH + "')"),
    Case("traceback frame walk to the config, then write the run directory", "dunder",
         "try:\n    1/0\nexcept ZeroDivisionError as e:\n    f = e.__traceback__.tb_frame\n"
         "while f.f_back:\n    f = f.f_back\nopen('VICTIM/pwned', 'w').write('x')"),
    Case("gc walk to the state holder and its pipes", "dunder",
         "import gc, os\nholders = [o for o in gc.get_objects() if type(o).__name__ == 'StateHolder']\n"
         "os.write(1, b'\\xff' * 64)\nprint(open('SECRET_PATH').read())"),
    Case("catch_warnings module to builtins import", "dunder",
         "w = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]\n"
         "os = w()._module.__builtins__['__import__']('os')\nos.system('" + TOUCH + "')"),
    # modules the allow-list admits that lead to os, sys or ctypes
    Case("random._os.system", "allowed module", f"import random\nrandom._os.system('{TOUCH}')"),
    Case("typing.sys.modules['os']", "allowed module", f"import typing\ntyping.sys.modules['os'].system('{TOUCH}')"),
    Case("numpy.ctypeslib.ctypes system()", "allowed module",
         f"import numpy.ctypeslib\nnumpy.ctypeslib.ctypes.CDLL(None).system(b'{TOUCH}')"),
    Case("ctypes raw socket syscall", "allowed module",
         "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.syscall(41, 2, 1, 0)\n"
         "print('socket fd', fd)\nassert fd < 0, fd"),
    # what an import allow-list admits (the paper's numpy) reaching the files with no forbidden name in the code
    Case("numpy writes a file outside the working directory", "allowed module",
         "import numpy as np\nnp.savetxt('CANARY', np.arange(3))"),
    Case("numpy reads the run directory's secret", "allowed module",
         "import numpy as np\nprint(np.loadtxt('SECRET_PATH', dtype=str))"),
    Case("ctypes unshare a new user namespace", "allowed module",
         "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.unshare(0x10000000) != 0\n"
         "import os\nos.system('" + TOUCH + "')"),
    Case("dataclasses.sys to subprocess", "allowed module",
         "import dataclasses\nsp = dataclasses.sys.modules.get('subprocess') or __import__('subprocess')\n"
         f"sp.run(['sh', '-c', '{TOUCH}'])"),
    # exec and other processes
    Case("memfd + execveat", "exec",
         "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = os.memfd_create('x')\n"
         "os.write(fd, open('/bin/sh', 'rb').read() if os.path.exists('/bin/sh') else b'')\n"
         "libc.syscall(322, fd, b'', None, None, 0x1000)\nos.system('" + TOUCH + "')"),
    Case("posix_spawn", "exec", f"import os\nos.posix_spawn('/bin/sh', ['sh', '-c', '{TOUCH}'], {{}})"),
    Case("ptrace the host", "exec",
         "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.ptrace(16, HOST_PID, 0, 0) != 0"),
    Case("process_vm_readv of the host", "exec",
         "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nbuf = ctypes.create_string_buffer(64)\n"
         "iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)\nassert libc.process_vm_readv(HOST_PID, iov, 1, iov, 1, 0) < 0"),
    Case("io_uring_setup", "exec",
         "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nparams = ctypes.create_string_buffer(120)\n"
         "assert libc.syscall(425, 8, params) < 0"),
    # the host's files
    Case("write the run directory", "files", "open('VICTIM/pwned', 'w').write('x')"),
    Case("read the run directory's secret", "files", "print(open('SECRET_PATH').read())"),
    Case("list the root directory", "files", "import os\nprint(os.listdir('/'))"),
    Case("write /tmp", "files", "open('CANARY', 'w').write('x')"),
    Case("chmod the run directory's files", "files",
         "import os\nos.chmod('SECRET_PATH', 0o777)\nos.chmod('VICTIM', 0o700)"),
    Case("lower the host's CPU limit", "signals",
         "import resource\nresource.prlimit(HOST_PID, resource.RLIMIT_CPU, (1, 1))"),
    Case("lower the priority of every process of its uid", "signals", "import os\nos.setpriority(os.PRIO_USER, 0, 19)"),
    Case("pin the host to one CPU", "signals", "import os\nos.sched_setaffinity(HOST_PID, {0})"),
    Case("read the host user's home", "files", "import os\nprint(os.listdir(os.path.expanduser('~' + str(os.getuid()))))\n"
         "print(open('/etc/shadow').read())"),
    # symlink and TOCTOU tricks against the host's file handling
    Case("symlink to the secret, read through it", "symlink", "import os\nos.symlink('SECRET_PATH', 'link')\nprint(open('link').read())"),
    Case("symlink to the run directory, write through it", "symlink",
         "import os\nos.symlink('VICTIM', 'run')\nopen('run/pwned', 'w').write('x')"),
    Case("hard link to the secret", "symlink", "import os\nos.link('SECRET_PATH', 'stolen')\nprint(open('stolen').read())"),
    Case("symlink left for the host's cleanup", "symlink",
         "import os\nos.symlink('VICTIM', 'victim')\nos.symlink('VICTIM/secret.txt', 'secret')\nos.mkdir('d')\n"
         "os.symlink('VICTIM', 'd/inner')"),
    Case("work directory nested too deep for a recursive cleanup", "symlink",
         "import os\nfor i in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\nopen('f', 'w').write('x')"),
    Case("rename the working directory away", "symlink",
         "import os\nos.rename(os.getcwd(), 'VICTIM/moved')"),
    # deserialisation on the result channel
    Case("forged results of the wrong types", "channel",
         FORGE + "forge(b'{\"op\": \"results\", \"results\": [{\"stdout\": 5, \"error\": [1], \"killed\": \"yes\"}]}')"),
    Case("forged oversized frame", "channel", "import os, struct\nos.write(1, struct.pack('>I', 2**31))\nos.write(1, b'x' * 1000)"),
    Case("forged invalid JSON and UTF-8", "channel", FORGE + "forge(b'\\xff\\xfe{not json')"),
    Case("forged call of a tool that does not exist", "channel",
         FORGE + "forge(b'{\"op\": \"tool_call\", \"candidate\": 7, \"name\": \"shell\", \"args\": [\"" + TOUCH + "\"], \"kwargs\": {}}')"),
    Case("forged deeply nested JSON", "channel", FORGE + "forge(b'[' * 100000 + b']' * 100000)"),
    Case("forged object with a pickle payload", "channel",
         FORGE + "import pickle\npayload = pickle.dumps(print).hex()\n"
         "forge(('{\"op\": \"results\", \"results\": [{\"final_answer\": {\"py/reduce\": \"' + payload + '\"}}]}').encode())"),
    # signals
    Case("kill every process it may", "signals", "import os\nos.kill(-1, 9)"),
    Case("kill the host", "signals", "import os\nos.kill(HOST_PID, 9)"),
    Case("kill the host's process group", "signals", "import os\nos.killpg(os.getpgid(HOST_PID), 9)"),
    Case("kill a sibling session", "signals", "import os\nos.kill(SIBLING_PID, 9)"),
    Case("stop its own process group", "signals", "import os, signal\nos.killpg(0, signal.SIGSTOP)"),
    # setsid and orphans
    Case("setsid in a child that outlives the call", "orphans",
         "import os, time\nif os.fork() == 0:\n    try:\n        os.setsid()\n    except OSError:\n        pass\n"
         "    time.sleep(300)\n    os._exit(0)\nprint('parent done')"),
    Case("double-forked daemon", "orphans",
         "import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n        time.sleep(300)\n    os._exit(0)\nprint('parent done')"),
    Case("setpgid away from the group", "orphans",
         "import os, time\nif os.fork() == 0:\n    try:\n        os.setpgid(0, 0)\n    except OSError:\n        pass\n"
         "    time.sleep(300)\n    os._exit(0)"),
    Case("background thread that keeps writing after the call", "orphans",
         "import threading, time\ndef spin():\n    n = 0\n    while True:\n        open(f'bg{n % 100}', 'w').write('x' * 65536)\n"
         "        n += 1\n        time.sleep(0.001)\nthreading.Thread(target=spin, daemon=True).start()"),
    # thread, fd, disk and /dev/shm exhaustion
    Case("thread exhaustion", "exhaustion",
         "import threading, time\nthreads = []\ntry:\n    while len(threads) < 100000:\n"
         "        t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n        t.start()\n        threads.append(t)\n"
         "except RuntimeError as e:\n    print('stopped at', len(threads), e)"),
    Case("fork bomb", "exhaustion", "import os\nwhile True:\n    os.fork()"),
    Case("fd exhaustion", "exhaustion", "handles = [open('/dev/null') for _ in range(100000)]"),
    Case("fd exhaustion kept in the session's state", "exhaustion",
         "handles = []\ntry:\n    while True:\n        handles.append(open('/dev/null'))\nexcept OSError:\n    pass"),
    Case("disk exhaustion", "exhaustion",
         "block = b'x' * (8 << 20)\nfor n in range(512):\n    with open(f'fill{n}', 'wb') as f:\n        f.write(block)"),
    Case("disk held by unlinked files kept open", "exhaustion",
         "import os\nfiles = []\nfor n in range(60):\n    f = open(f'u{n}', 'wb')\n    os.unlink(f'u{n}')\n"
         "    f.write(b'x' * (16 << 20))\n    f.flush()\n    files.append(f)"),
    Case("disk held by O_TMPFILE files", "exhaustion",
         "import os\nfds = []\nfor n in range(60):\n    fd = os.open('.', os.O_TMPFILE | os.O_WRONLY)\n"
         "    os.write(fd, b'x' * (16 << 20))\n    fds.append(fd)"),
    Case("memory held by memfd files", "exhaustion",
         "import os\nfds = []\nfor n in range(60):\n    fd = os.memfd_create(f'm{n}')\n"
         "    os.write(fd, b'x' * (16 << 20))\n    fds.append(fd)"),
    Case("inode exhaustion", "exhaustion", "for n in range(200000):\n    open(f'f{n}', 'w').close()"),
    Case("/dev/shm exhaustion", "exhaustion", "block = b'x' * (8 << 20)\nfor n in range(512):\n    open(f'/dev/shm/rd{n}', 'wb').write(block)"),
    Case("anonymous memory", "exhaustion", "import mmap\nm = mmap.mmap(-1, 1 << 40)\nm[-1] = 1"),
    # plain Python, no import: an interpreter-level executor sees nothing to refuse
    Case("a loop in C code", "exhaustion", "sum(range(10**13))"),
    Case("a 10 GB string", "exhaustion", "x = 'x' * 10**10"),
    # /proc of the parent
    Case("the host's environment from /proc", "proc", "print(open('/proc/HOST_PID/environ').read())"),
    Case("the state holder's memory from /proc", "proc",
         "import os\nf = open(f'/proc/{os.getppid()}/mem', 'r+b')\nprint(f.read(16))"),
    Case("the host's working directory through /proc", "proc", "import os\nprint(os.listdir('/proc/HOST_PID/cwd'))"),
    # Ray's unix sockets and loopback services
    Case("TCP to a loopback service", "network",
         "import socket\ns = socket.create_connection(('127.0.0.1', TCP_PORT), timeout=2)\ns.sendall(b'x')"),
    Case("a unix socket like Ray's", "network",
         "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('UNIX_PATH')\ns.sendall(b'x')"),
    Case("an abstract unix socket", "network",
         "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0ABSTRACT')\ns.sendall(b'x')"),
    Case("UDP to loopback", "network", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', TCP_PORT))"),
]


class Environment:
    """What a case could harm: a run directory with a secret, a canary path, loopback services."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)  # the secret's; names below use another, as error messages quote them
        names = secrets.token_hex(8)
        self.victim = Path(tempfile.mkdtemp(prefix="rd-victim-"))
        self.victim.chmod(0o755)  # readable by anyone: file modes are not what protects it
        self.secret = self.victim / "secret.txt"
        self.secret.write_text(f"secret-{self.token}")
        self.secret.chmod(0o644)
        self.canary = Path(tempfile.gettempdir()) / f"rd-canary-{names}"
        self.sockets = Path(tempfile.mkdtemp(prefix="rd-sockets-"))
        self.sockets.chmod(0o755)
        self.unix_path = self.sockets / "raylet"
        self.abstract = f"rd-abstract-{names}"
        self.connections = 0
        self.servers: list[asyncio.AbstractServer] = []

    async def __aenter__(self) -> "Environment":
        async def count(reader, writer):
            self.connections += 1
            writer.close()

        tcp = await asyncio.start_server(count, "127.0.0.1", 0)
        self.tcp_port = tcp.sockets[0].getsockname()[1]
        unix = await asyncio.start_unix_server(count, str(self.unix_path))
        self.unix_path.chmod(0o777)
        abstract = await asyncio.start_unix_server(count, "\0" + self.abstract)
        self.servers = [tcp, unix, abstract]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.tcp_port))
        self.udp.setblocking(False)
        self.listing = self._listing()
        self.scheduling = self._scheduling()
        return self

    async def __aexit__(self, *exc) -> None:
        for server in self.servers:
            server.close()
        self.udp.close()
        shutil.rmtree(self.victim, ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)
        self.canary.unlink(missing_ok=True)

    def _listing(self) -> dict[str, str]:
        files = {str(p.relative_to(self.victim)): f"{p.stat().st_mode:o} {p.read_text()}"
                 for p in sorted(self.victim.rglob("*")) if p.is_file()}
        return {".": f"{self.victim.stat().st_mode:o}", **files}

    def fill(self, code: str, host_pid: int, sibling_pid: int) -> str:
        for key, value in (("HOST_PID", host_pid), ("SIBLING_PID", sibling_pid), ("SECRET_PATH", self.secret),
                           ("VICTIM", self.victim), ("CANARY", self.canary), ("TCP_PORT", self.tcp_port),
                           ("UNIX_PATH", self.unix_path), ("ABSTRACT", self.abstract)):
            code = code.replace(key, str(value))
        return code

    @staticmethod
    def _scheduling() -> tuple:
        return os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0))

    def breaches(self, observed: str) -> list[str]:
        found = []
        if self._scheduling() != self.scheduling:
            found.append(f"changed the host's priority or CPUs: {self.scheduling} -> {self._scheduling()}")
        if self.token in observed:
            found.append("read the secret")
        if self._listing() != self.listing:
            found.append("changed the run directory")
        if self.canary.exists():
            found.append("wrote or executed outside its working directory (the canary exists)")
        if self.connections:
            found.append(f"reached a loopback service ({self.connections} connections)")
        try:
            if self.udp.recv(64):
                found.append("sent a UDP datagram to the host")
        except BlockingIOError:
            pass
        return found


class DiskUse:
    """The most disk a case takes on its working directory's filesystem, sampled while it runs: files
    it hides from the watchdog's walk (unlinked, nameless) only show there."""

    def __init__(self, path: str) -> None:
        self.path, self.most = path, 0
        self._start = self._free()
        self._task = asyncio.create_task(self._sample())

    def _free(self) -> int:
        info = os.statvfs(self.path)
        return info.f_bavail * info.f_frsize

    async def _sample(self) -> None:
        while True:
            self.most = max(self.most, self._start - self._free())
            await asyncio.sleep(0.02)

    def stop(self) -> int:
        self._task.cancel()
        return self.most


def processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds `marker` (a session's working directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


async def _say_42(session: SandboxSession) -> bool:
    """Whether the session still works. On the pod rung sessions share the host uid's process
    budget, so a bomb's processes must first be reaped: a few seconds of ResourceError may pass."""
    for _ in range(10):
        try:
            result = await asyncio.wait_for(session.run("print(6 * 7)"), CASE_SECONDS)
        except (SandboxError, asyncio.TimeoutError):
            return False
        if result.stdout == "42\n":
            return True
        if (result.error or {}).get("type") != "ResourceError":
            return False
        await asyncio.sleep(0.5)
    return False


async def run_case(case: Case, env: Environment, pool: SandboxPool, sibling: SandboxSession) -> dict:
    start = time.monotonic()
    session = await pool.acquire()
    marker = session.work_dir
    code = env.fill(case.code, os.getpid(), sibling.pid)
    disk = DiskUse(os.path.dirname(marker))
    try:
        result = await asyncio.wait_for(session.run(code), CASE_SECONDS)
        outcome = f"{result.error['type']}: {result.error['message'][:120]}" if result.error else "ran"
        observed = f"{result.stdout}\n{result.error}\n{result.final_answer}"
    except (SandboxError, asyncio.TimeoutError) as e:
        outcome = f"session ended: {e or type(e).__name__}"
        observed = str(e)
    # What a case left running has time to act: an orphan's or a thread's writes come after the call; every
    # other case acts within it, and a disk or process breach is still caught below.
    await asyncio.sleep(0.3 if case.kind == "orphans" else 0.05)
    await pool.release(session)
    problems = env.breaches(observed)
    if disk.stop() > pool.policy.disk_bytes + DISK_SLACK:
        problems.append(f"held {disk.most >> 20} MiB of disk, past the policy's {pool.policy.disk_bytes >> 20} MiB")
    deadline = time.monotonic() + 5
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if left:
        problems.append(f"left processes running: {left}")
    if os.path.exists(marker):
        problems.append("its working directory outlived the session")
    if not await _say_42(sibling):
        problems.append("a sibling session stopped working")
    async with pool.session() as fresh:
        if not await _say_42(fresh):
            problems.append("the pool's next session does not work")
    return {"name": case.name, "kind": case.kind, "outcome": outcome, "problems": problems,
            "seconds": round(time.monotonic() - start, 2)}


async def run_catalogue(policy: SandboxPolicy) -> dict:
    """Every case against `policy`; returns the sessions' isolation report and each case's findings."""
    async with Environment() as env, SandboxPool(policy, size=1) as pool:
        sibling = await SandboxSession.start(policy)
        try:
            results = []
            for case in CASES:
                try:
                    results.append(await asyncio.wait_for(run_case(case, env, pool, sibling), 3 * CASE_SECONDS))
                except asyncio.TimeoutError:
                    results.append({"name": case.name, "kind": case.kind, "outcome": "timed out",
                                    "problems": ["the case overran its time limit"], "seconds": 3 * CASE_SECONDS})
                if not sibling.alive:  # a case that killed it is already reported; the next needs a live one
                    sibling = await SandboxSession.start(policy)
            return {"isolation": sibling.isolation, "uid": os.getuid(), "results": results}
        finally:
            await sibling.close()


def catalogue_policy(user_namespaces: bool = True) -> SandboxPolicy:
    return SandboxPolicy(timeout_seconds=3.0, memory_bytes=1 << 30, output_limit=4000, processes=32,
                         python_layers=False, user_namespaces=user_namespaces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-user-namespaces", action="store_true", help="act as a pod without user namespaces")
    args = parser.parse_args()
    report = asyncio.run(run_catalogue(catalogue_policy(not args.no_user_namespaces)))
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
