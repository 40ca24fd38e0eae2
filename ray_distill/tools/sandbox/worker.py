"""The sandbox process: runs untrusted agent code, one episode per process tree.

Started by the host as `python -I worker.py CONFIG_JSON` with a scrubbed
environment, talking framed JSON over stdin/stdout. Everything at module
level is stdlib, because the script runs without the project on sys.path.

Process tree (one process group, started by the host as a new session):

    S  reaper: child subreaper that only reaps; never runs user code
    └─ Z  state holder: owns the episode's variables, talks to the host
       └─ C1..CN  candidates: forks of Z, each runs one code block

Every step runs in forks of Z, so each candidate sees its own copy of the
session state (SAG); the chosen candidate *becomes* Z (its variables are
the session's from then on) and the old Z exits. A candidate that crashes,
hangs in C code or is killed leaves Z, and so the session, intact.

Forking Z costs milliseconds once numpy or sympy is loaded (the kernel copies
its page tables), more than a one-line step itself. So Z forks its first
candidate ahead of time, a spare that waits for its code while the host is
busy elsewhere (the model writing the next action); further candidates of a
step are forked on demand.

Boundary: the kernel's, set up by `confine.py` before any agent code runs
(namespaces, a private uid or user namespace, Landlock, seccomp) plus
rlimits, a pids cgroup where the host may make one, a private working
directory and wall-clock kills. With a pid namespace, S is its init and the
process the host started only waits for S. Convenience (Python level,
`SandboxPolicy.python_layers`): an import allow-list, an audit hook that
refuses sockets, process creation, signals and file access outside the
working directory with clear errors, and capped output. Tool calls
(`web_search`) travel back to the host as messages; the sandbox never needs
a socket.
"""

import builtins
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

MAX_MESSAGE_BYTES = 64 << 20
_HEADER = struct.Struct(">I")
HOST_IN, HOST_OUT = 0, 1


class ProtocolError(Exception):
    pass


def frame(message):
    """A message as it travels: a 4-byte length, then JSON."""
    data = json.dumps(message, default=str).encode()
    return _HEADER.pack(len(data)) + data


def send(fd, message):
    view = memoryview(frame(message))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(fd):
    """The next message, or None at end of file."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    body = _read_exact(fd, size)
    if body is None:
        raise ProtocolError("truncated message")
    return json.loads(body)


# --- exceptions that user code cannot swallow with `except Exception` ------


class FinalAnswer(BaseException):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class ExecutionTimeout(BaseException):
    pass


class OutputLimitExceeded(BaseException):
    pass


class ToolError(Exception):
    pass


class _CappedOutput(io.TextIOBase):
    """stdout/stderr of a candidate: kept up to `limit` characters, then stops the code."""

    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.size = 0
        self.truncated = False

    def writable(self):
        return True

    def write(self, text):
        text = str(text)
        room = self.limit - self.size
        if len(text) > room:
            self.parts.append(text[:room])
            self.size = self.limit
            self.truncated = True
            raise OutputLimitExceeded(f"output exceeded {self.limit} characters")
        self.parts.append(text)
        self.size += len(text)
        return len(text)

    def getvalue(self):
        return "".join(self.parts)


# --- setup -------------------------------------------------------------------


_internal = [0]  # >0 while the worker's own code forks or signals


class _Privileged:
    def __enter__(self):
        _internal[0] += 1

    def __exit__(self, *exc):
        _internal[0] -= 1


def _set_limit(which, value):
    if value is None:
        return
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else value + 5))


def _join_cgroup(path, report):
    """Enter the pids cgroup the host prepared, which bounds the session's
    process count even for root (RLIMIT_NPROC never binds uid 0)."""
    if not path:
        return
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
        report["processes"] = "cgroup"
    except OSError as e:
        report["cgroup"] = f"not joined: {e.strerror}"


def _disarm_process_spawning():
    # fork_exec raises no audit event of its own; subprocess reaches it by
    # attribute lookup, so replacing it closes that path too. Imported here, not at the top: the sandbox
    # process imports only what it uses, and only a policy that refuses processes needs this.
    import _posixsubprocess

    def refused(*args, **kwargs):
        raise PermissionError("sandbox: process creation is not allowed")

    _posixsubprocess.fork_exec = refused


def _install_audit_hook(config):
    """Refuse what agent code has no business doing, whatever path it takes to get there."""
    work = os.path.realpath(config["work_dir"])
    read_roots = tuple(os.path.realpath(p) for p in [*config["read_roots"], *_SYSTEM_READ, "/dev/null"])
    denied = {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.forkpty",
        "os.setuid", "os.setgid", "os.setsid", "os.setpgid", "os.chroot", "pty.spawn",
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata", "ctypes.addressof",
        "mmap.__new__", "sys.remote_exec", "sys.setprofile", "sys.settrace", "sys.addaudithook",
        "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
    }
    privileged = {"os.fork", "os.kill", "os.killpg"}  # the worker's own, under _Privileged
    path_events = {
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
        "os.symlink", "os.truncate", "os.utime", "os.chdir", "os.listdir", "os.scandir",
        "shutil.rmtree", "shutil.copyfile", "shutil.move",
    }

    def inside(path, roots):
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    def check_path(event, path, write):
        if isinstance(path, int) or path is None:
            return
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = os.fspath(path)
        if inside(path, (work,)) or (not write and inside(path, read_roots)):
            return
        raise PermissionError(f"sandbox: {event} of {path!r} is not allowed outside the working directory")

    def hook(event, args):
        if _internal[0]:
            return
        if event in denied or event in privileged:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            write = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            )
            check_path(event, path, bool(write))
        elif event in path_events and args:
            check_path(event, args[0], event not in ("os.listdir", "os.scandir"))

    sys.addaudithook(hook)


def _guarded_builtins(allowed, real_import):
    safe = dict(builtins.__dict__)

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            raise ImportError("relative imports are not allowed in the sandbox")
        if name.split(".")[0] not in allowed:
            raise ImportError(f"import of {name!r} is not allowed; allowed modules: {', '.join(sorted(allowed))}")
        return real_import(name, globals, locals, fromlist, level)

    safe["__import__"] = guarded_import
    for name in ("exit", "quit", "input", "breakpoint", "help", "copyright", "credits", "license"):
        safe.pop(name, None)
    return safe


# --- the state holder and its candidates -------------------------------------


def _error(exc_type, message, line=None, source=None):
    error = {"type": exc_type, "message": message}
    if line is not None:
        error["line"] = line
        error["source"] = source
    return error


def _describe(exc, code):
    if isinstance(exc, SyntaxError):
        return _error("SyntaxError", exc.msg, exc.lineno, (exc.text or "").strip())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<code>":
            line = frame.lineno
    source = code.splitlines()[line - 1].strip() if line and line <= len(code.splitlines()) else None
    return _error(type(exc).__name__, str(exc), line, source)


def _jsonable(value):
    if isinstance(value, (str, bool, int)) or (isinstance(value, float) and value == value):
        return value
    return str(value)


_ADOPTED = object()  # what a spare's _fork_spare returns in the spare once it is the state holder


class StateHolder:
    def __init__(self, config):
        self.config = config
        self.namespace = {"__name__": "__main__", "__builtins__": config["_builtins"]}
        self.pending = []  # candidates of the last step, awaiting the host's choice
        for tool in config["tools"]:
            self.namespace[tool] = self._tool_stub(tool)
        self.namespace["final_answer"] = self._final_answer
        self.channel = None  # (to Z, from Z) while running as a candidate
        self.spare = None  # a fork of this state, waiting for the next step's first code

    # tools, as seen from user code inside a candidate
    def _tool_stub(self, name):
        def call(*args, **kwargs):
            send(self.channel[0], {"op": "tool_call", "name": name, "args": list(args), "kwargs": kwargs})
            reply = recv(self.channel[1])
            if reply is None:
                os._exit(1)
            if "error" in reply:
                raise ToolError(reply["error"])
            return reply["value"]

        call.__name__ = name
        return call

    @staticmethod
    def _final_answer(answer):
        raise FinalAnswer(answer)

    # -- Z side --
    def serve(self):
        while True:
            if self.spare is None and not any(c["r"] is not None for c in self.pending):
                # Not while candidates await the host's choice: one of them may replace this state.
                self.spare = self._fork_spare()
                if self.spare is _ADOPTED:  # this process was the spare, and holds the state now
                    self.spare = None
                    continue
            message = recv(HOST_IN)
            if message is None or message["op"] == "close":
                os._exit(0)
            if message["op"] == "run":
                self._run(message)
            elif message["op"] == "choose":
                self._choose(message.get("index"))
            else:
                raise ProtocolError(f"unexpected op {message['op']!r}")

    def _reap(self):
        with _Privileged():
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return

    def _run(self, message):
        self._discard_pending()
        self._reap()
        timeout = float(message["timeout"])
        candidates = []
        for index, code in enumerate(message["codes"]):
            ends = self._hand_to_spare(code, timeout)
            if ends is None:
                try:
                    pid, ends = self._fork(candidates)
                except OSError as e:  # out of processes or descriptors (agent code's doing): the session lives on
                    error = _error("ResourceError", f"the sandbox could not start this code: {e.strerror}")
                    candidates.append({"index": index, "pid": None, "r": None, "w": None,
                                       "result": self._killed(error)})
                    continue
                if pid == 0:
                    self._candidate(code, timeout, ends)
                    # Adopted (a candidate that is not exits inside): this process is the state holder now,
                    # and returns to serve's loop rather than calling it again, so that its stack does not
                    # grow by a step's frames with every adopted step.
                    return
            candidates.append({"index": index, **ends, "deadline": time.monotonic() + timeout + 1.0, "result": None})
        self._collect(candidates, timeout)
        results = [c["result"] for c in candidates]
        self.pending = candidates
        if message.get("auto_adopt", True) and len(candidates) == 1 and not results[0]["killed"]:
            adopted = self._handover(0)
            send(HOST_OUT, {"op": "results", "results": results, "adopted": 0 if adopted else None})
            if adopted:
                os._exit(0)
            return
        send(HOST_OUT, {"op": "results", "results": results, "adopted": None})

    def _fork_spare(self):
        """In Z: a fork that waits for one code block, as {pid, r, w}, or None if it cannot start (the step
        then forks as usual). In the fork itself: _ADOPTED, once it is adopted and holds the state."""
        try:
            pid, ends = self._fork([])
        except OSError:
            return None
        if pid:
            return ends
        message = recv(ends[1])
        if message is None or message.get("op") != "code":  # Z closed or replaced: this state is stale
            os._exit(0)
        self._candidate(message["code"], float(message["timeout"]), ends)
        return _ADOPTED

    def _hand_to_spare(self, code, timeout):
        """Give `code` to the spare, if there is one alive: its {pid, r, w}, else None."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            send(spare["w"], {"op": "code", "code": code, "timeout": timeout})
        except OSError:  # it died waiting (its end of the pipe is closed): fork afresh
            self._close(spare)
            return None
        return spare

    def _fork(self, siblings):
        """Fork this state with a pipe each way: (pid, {pid, r, w}) in Z; (0, (to Z, from Z)) in the fork,
        which keeps none of Z's ends of its siblings' pipes. Raises OSError, with nothing left open, when
        processes or descriptors run out."""
        fds = []
        try:
            fds += os.pipe()
            fds += os.pipe()
            with _Privileged():
                pid = os.fork()
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        to_child_r, to_child_w, from_child_r, from_child_w = fds
        if pid:
            os.close(to_child_r)
            os.close(from_child_w)
            return pid, {"pid": pid, "r": from_child_r, "w": to_child_w}
        for c in siblings:
            self._close(c)
        os.close(to_child_w)
        os.close(from_child_r)
        return 0, (from_child_w, to_child_r)

    def _collect(self, candidates, timeout):
        by_fd = {c["r"]: c for c in candidates if c["r"] is not None}
        while any(c["result"] is None for c in candidates):
            now = time.monotonic()
            for c in candidates:
                if c["result"] is None and now >= c["deadline"]:
                    self._kill(c, _error("TimeoutError", f"execution exceeded {timeout:g} s and was stopped"))
            waiting = [c["r"] for c in candidates if c["result"] is None]
            if not waiting:
                break
            wait = max(0.0, min(c["deadline"] for c in candidates if c["result"] is None) - now)
            ready, _, _ = select.select(waiting + [HOST_IN], [], [], wait)
            for fd in ready:
                if fd == HOST_IN:
                    self._relay_tool_result(candidates)
                    continue
                c = by_fd[fd]
                try:
                    message = recv(fd)
                except (ProtocolError, ValueError) as e:
                    self._kill(c, _error("ProtocolError", str(e)))
                    continue
                if message is None:
                    self._died(c)
                elif message["op"] == "tool_call":
                    message["candidate"] = c["index"]
                    send(HOST_OUT, message)
                elif message["op"] == "result":
                    c["result"] = message["result"]

    def _relay_tool_result(self, candidates):
        message = recv(HOST_IN)
        if message is None:
            os._exit(0)
        if message.get("op") != "tool_result":
            raise ProtocolError(f"expected tool_result during a step, got {message.get('op')!r}")
        c = candidates[message["candidate"]]
        if c["result"] is None:
            send(c["w"], message)

    @staticmethod
    def _kill_pid(pid):
        with _Privileged():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _killed(error):
        """The result of a candidate that never reported one: its state is gone."""
        return {"stdout": "", "truncated": False, "error": error, "final_answer": None,
                "has_final_answer": False, "killed": True, "seconds": None}

    def _kill(self, c, error):
        self._kill_pid(c["pid"])
        c["result"] = self._killed(error)
        self._close(c)

    def _died(self, c):
        with _Privileged():
            try:
                _, status = os.waitpid(c["pid"], 0)
            except ChildProcessError:
                status = 0
        if os.WIFSIGNALED(status):
            how = f"was killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WTERMSIG(status) in (signal.SIGKILL, signal.SIGXCPU):
                how += " (CPU-time or memory limit)"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
        c["result"] = self._killed(_error("ProcessDied", f"the interpreter {how}"))
        self._close(c)

    @staticmethod
    def _close(c):
        for key in ("r", "w"):
            if c.get(key) is not None:
                os.close(c[key])
                c[key] = None

    def _discard_pending(self):
        for c in self.pending:
            if c["r"] is not None:
                self._kill_pid(c["pid"])
                self._close(c)
        self.pending = []

    def _choose(self, index):
        valid = index is not None and 0 <= index < len(self.pending) and not self.pending[index]["result"]["killed"]
        if not valid:
            self._discard_pending()
            send(HOST_OUT, {"op": "chosen", "index": None})
            return
        adopted = self._handover(index)
        send(HOST_OUT, {"op": "chosen", "index": index if adopted else None})
        if adopted:
            os._exit(0)

    def _handover(self, index):
        """Make pending candidate `index` the state holder. On True the caller
        sends its reply and exits; on False (the winner died in between) this
        process keeps the session and its state."""
        winner = self.pending[index]
        self.pending = [c for c in self.pending if c is not winner]
        self._discard_pending()
        send(winner["w"], {"op": "adopt"})
        ack = recv(winner["r"])
        self._close(winner)
        return ack is not None and ack.get("op") == "adopted"

    # -- candidate side --
    def _candidate(self, code, timeout, channel):
        """Run one candidate's code and report it; exits unless the host adopts it, then returns."""
        self.channel = channel
        self.pending = []
        out = _CappedOutput(self.config["output_limit"])
        real_stdout, real_stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out

        def on_alarm(signum, frame):
            raise ExecutionTimeout(f"execution exceeded {timeout:g} s and was stopped")

        signal.signal(signal.SIGALRM, on_alarm)
        result = {"stdout": "", "truncated": False, "error": None, "final_answer": None,
                  "has_final_answer": False, "killed": False}
        start = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            exec(compile(code, "<code>", "exec"), self.namespace)
        except FinalAnswer as answer:
            result["final_answer"] = _jsonable(answer.value)
            result["has_final_answer"] = True
        except ExecutionTimeout as e:
            result["error"] = _error("TimeoutError", str(e))
        except BaseException as e:  # everything user code raises is an observation
            result["error"] = _describe(e, code)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = real_stdout, real_stderr
        result["seconds"] = time.perf_counter() - start
        result["stdout"] = out.getvalue()
        result["truncated"] = out.truncated
        try:
            send(channel[0], {"op": "result", "result": result})
            verdict = recv(channel[1])
        except Exception:
            os._exit(1)
        if verdict is None or verdict.get("op") != "adopt":
            os._exit(0)
        send(channel[0], {"op": "adopted"})
        os.close(channel[0])
        os.close(channel[1])
        self.channel = None


def _load_confine():
    # A sibling file, loaded by path: the worker runs with -I, without the project on sys.path. Imported
    # here, not at the top: the sandbox process imports only what it uses, when it uses it.
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "confine.py")
    spec = importlib.util.spec_from_file_location("_sandbox_confine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REQUIRED = ("filesystem", "syscalls", "network", "signals", "processes")


def _confine(config, report):
    """The OS boundary (`confine.py`), in the order the kernel needs: namespaces while privileged,
    imports while the interpreter is still readable, then identity, Landlock and seccomp."""
    confine = _load_confine()
    root = os.getuid() == 0
    namespaces, pid_namespace = confine.enter_namespaces(config["user_namespaces"])
    report["network"] = namespaces.pop("network")
    report.update(namespaces)
    confine.child_subreaper()
    limits = config["limits"]
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    _set_limit(resource.RLIMIT_NOFILE, limits["open_files"])
    _set_limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _join_cgroup(config.get("cgroup"), report)
    sys.path.extend(p for p in config["site_dirs"] if p not in sys.path)
    # Import before Landlock: a half-imported numpy cannot recover from a refused read.
    report["preloaded"] = []
    for name in config["preload"]:
        try:
            __import__(name)
            report["preloaded"].append(name)
        except Exception:
            pass
    if config["python_layers"]:
        _disarm_process_spawning()
    uid = config.get("uid")
    if root and uid is not None:
        confine.become(uid, config["gid"], keep_read_search=not config["interpreter_world_readable"])
        report["identity"] = f"private uid {uid}" + (
            "" if config["interpreter_world_readable"] else " (+CAP_DAC_READ_SEARCH: the interpreter is not world-readable)")
        _set_limit(resource.RLIMIT_NPROC, limits["processes"])
    else:
        if report.get("user_namespace"):
            confine.drop_capabilities()
        report["identity"] = ("user namespace, uid " if report.get("user_namespace") else "host uid ") + str(os.getuid())
        if not root:
            # RLIMIT_NPROC counts every process of the uid, the host's too: allow this many more.
            _set_limit(resource.RLIMIT_NPROC, confine.processes_of_uid(os.getuid()) + limits["processes"])
    report.setdefault("processes", "rlimit" if not root or uid is not None else "none: root without a cgroup")
    _set_limit(resource.RLIMIT_AS, limits["memory_bytes"])
    # After the last change of identity, which clears it.
    confine.die_with_parent()
    if os.getppid() != config["host_pid"]:  # the host died before that took hold
        os._exit(1)
    confine.no_new_privs()
    threads = confine.thread_count()
    if threads > 1:  # Landlock binds only the calling thread
        report["filesystem"] = f"none: the worker runs {threads} threads"
    else:
        read_paths = [*config["read_roots"], *confine.mapped_library_dirs(), *_SYSTEM_READ]
        report.update(confine.restrict_filesystem(read_paths, [config["work_dir"]], ["/dev/null"]))
    report["syscalls"] = confine.filter_syscalls()
    if report["network"] != "namespace":
        report["network"] = "seccomp: no sockets" if report["syscalls"] == "seccomp" else report["network"]
    signals_scope = report.pop("signals_scope", False)
    if pid_namespace:
        report["signals"] = "pid namespace"
    elif root and uid is not None:
        report["signals"] = "private uid"
    elif signals_scope:
        report["signals"] = "landlock scope"
    else:
        report["signals"] = "none: same uid as the host, no pid namespace, no Landlock scope"
    report["python_layers"] = "on" if config["python_layers"] else "off"
    report["missing"] = [key for key in _REQUIRED if str(report.get(key, "none")).startswith("none")]
    return pid_namespace, confine


# Read-only besides the interpreter: the loader's cache, time zones, randomness.
_SYSTEM_READ = ("/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom", "/dev/random",
                "/dev/zero")


def _only_wait(child=None):
    """Leave the host channel to Z and wait: for `child`, then exit with its status, or, as the
    reaper, for every descendant until none is left."""
    os.close(HOST_IN)
    os.close(HOST_OUT)
    with _Privileged():
        while True:
            try:
                _, status = os.waitpid(child or -1, 0)
            except ChildProcessError:
                os._exit(0)
            except InterruptedError:
                continue
            if child:
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _end_session(*_):
    with _Privileged():
        os.killpg(0, signal.SIGKILL)


def main(config):
    report = {}
    os.umask(0o077)
    os.chdir(config["work_dir"])
    pid_namespace, confine = _confine(config, report)
    if config["python_layers"]:
        config["_builtins"] = _guarded_builtins(frozenset(config["allowed_imports"]), builtins.__import__)
        _install_audit_hook(config)
    else:
        config["_builtins"] = builtins.__dict__

    if pid_namespace:
        # The next fork is the namespace's init, which must outlive every state holder: it is the
        # reaper S below. This process, outside the namespace, only waits for it.
        with _Privileged():
            pid = os.fork()
        if pid:
            _only_wait(pid)
        confine.die_with_parent()  # S, the namespace's init: its death ends every process in it
    else:
        # Without a pid namespace S's death ends nothing by itself, so when the host dies S ends
        # the session's process group, which no process of it can leave (setsid and setpgid are
        # refused). Code that sends S the signal only ends its own session.
        signal.signal(signal.SIGTERM, _end_session)
        confine.die_with_parent(signal.SIGTERM)
        if os.getppid() != config["host_pid"]:  # the host died before that took hold
            _end_session()
    with _Privileged():
        pid = os.fork()
    if pid:
        _only_wait()  # S: reap until no descendant is left
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # S's alone: a SIGTERM to Z or a candidate ends just that process
    holder = StateHolder(config)
    send(HOST_OUT, {"op": "ready", "pid": os.getpid(), "isolation": report})
    holder.serve()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
