"""The process that runs symbolic checks: one per caller process, forking a child per check.

`multiprocessing` cannot be used for this: its forkserver and spawn children
import the caller's main module, so a plain script without an
`if __name__ == "__main__":` guard re-ran itself there, failed, and the
check read as "not equal" (a silent wrong verdict). This server is started
with `python -c` and knows nothing of the caller's main module, so it works
the same from scripts, notebooks, `python -c` and Ray workers.

Protocol, one JSON object per line: the server first writes
`{"ready": true}` once sympy is imported; then, for each request
`{"id", "a", "b", "rel_tol", "timeout"}`, `{"id", "verdict"}` where
verdict is true, false or null (the check overran its time limit, and its
child was killed, or it crashed). It exits when its stdin closes, killing
the checks still running. The server is single-threaded, so forking it is
safe, and children inherit its imported sympy: a check costs a fork.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import time

from ray_distill.scoring.symbolic import sympy_equal


def serve() -> None:
    importlib.import_module("sympy.parsing.sympy_parser")  # once here; every check's fork inherits it

    _write({"ready": True})
    running: dict[int, dict] = {}  # read end of a child's pipe -> its check
    buffer = b""
    while True:
        now = time.monotonic()
        for fd, check in list(running.items()):
            if now >= check["deadline"]:
                _finish(running, fd, None)
        wait = min((c["deadline"] for c in running.values()), default=now + 3600) - now
        ready, _, _ = select.select([0, *running], [], [], max(wait, 0.0))
        for fd in ready:
            if fd != 0:
                _finish(running, fd, os.read(fd, 16))
                continue
            data = os.read(0, 1 << 16)
            if not data:
                for fd in list(running):
                    _finish(running, fd, None)
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                try:
                    read_end, write_end = os.pipe()
                except OSError:  # out of descriptors: this check is undecided, the server lives on
                    _write({"id": request["id"], "verdict": None})
                    continue
                try:
                    pid = os.fork()
                except OSError:  # out of processes or memory
                    os.close(read_end)
                    os.close(write_end)
                    _write({"id": request["id"], "verdict": None})
                    continue
                if pid == 0:
                    os.close(read_end)
                    # Only the verdict pipe: the caller must see EOF when this server dies, whatever its checks do.
                    devnull = os.open(os.devnull, os.O_RDWR)
                    os.dup2(devnull, 0)
                    os.dup2(devnull, 1)
                    try:
                        verdict = sympy_equal(request["a"], request["b"], request["rel_tol"])
                    except Exception:  # any failure to parse or simplify means "not shown equal"
                        verdict = False
                    os.write(write_end, b"1" if verdict else b"0")
                    os._exit(0)
                os.close(write_end)
                running[read_end] = {"id": request["id"], "pid": pid,
                                     "deadline": time.monotonic() + float(request["timeout"])}


def _finish(running: dict[int, dict], fd: int, answer: bytes | None) -> None:
    check = running.pop(fd)
    os.close(fd)
    if answer is None or answer not in (b"0", b"1"):
        try:
            os.kill(check["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(check["pid"], 0)
    _write({"id": check["id"], "verdict": None if answer not in (b"0", b"1") else answer == b"1"})


def _write(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
