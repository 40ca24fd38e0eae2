"""The sandbox's OS boundary holds with the Python layers switched off: the hostile catalogue
(`sandbox_catalogue.py`) as the host's user, as an unprivileged user, and as one without user
namespaces (a Kubernetes pod's default)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from ray_distill.tools.sandbox import IsolationRefused, SandboxPolicy, SandboxPool, SandboxSession
from ray_distill.tools.sandbox.session import check_isolation

from sandbox_catalogue import CASES, catalogue_policy, processes_with, run_catalogue

REPO = Path(__file__).resolve().parents[1]
# Debian's interpreter: every user may run it, unlike a venv whose interpreter lives under /root.
SYSTEM_PYTHON = "/usr/bin/python3.11"
IDENTITY_SECONDS = 180


def _check(report: dict, identity: str) -> None:
    results = report["results"]
    assert len(results) == len(CASES) >= 40
    assert {r["kind"] for r in results} >= {"dunder", "allowed module", "symlink", "channel", "signals", "orphans",
                                            "exhaustion", "proc", "network", "exec", "files"}
    breaches = {r["name"]: r["problems"] for r in results if r["problems"]}
    assert not breaches, f"{identity}: {json.dumps(breaches, indent=1)}"
    isolation = report["isolation"]
    assert isolation["missing"] == [] and isolation["python_layers"] == "off", isolation
    assert isolation["filesystem"].startswith("landlock") and isolation["syscalls"] == "seccomp", isolation
    assert max(r["seconds"] for r in results) < 60


@pytest.mark.slow
def test_catalogue_is_contained_as_the_host_user():
    report = asyncio.run(asyncio.wait_for(run_catalogue(catalogue_policy()), IDENTITY_SECONDS))
    _check(report, "host user")
    if os.geteuid() == 0:
        assert report["isolation"]["identity"].startswith("private uid"), report["isolation"]
    assert report["isolation"]["signals"] == "pid namespace" and report["isolation"]["network"] == "namespace"


@contextlib.contextmanager
def _unprivileged():
    """(command prefix, environment, a directory every user may write): Debian's interpreter run as
    user nobody, with this project and the venv's packages on its path."""
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or not runuser or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, runuser and Debian's python3.11 to run the sandbox as another user")
    site = sysconfig.get_paths()["purelib"]
    probe = subprocess.run([runuser, "-u", "nobody", "--", "test", "-r", f"{site}/numpy/__init__.py", "-a",
                            "-r", str(REPO / "ray_distill/__init__.py")], capture_output=True)
    if probe.returncode:
        pytest.skip(f"user nobody cannot read {site} or {REPO}")
    shared = Path(tempfile.mkdtemp(prefix="rd-unprivileged-"))  # pytest's own tmp_path is root's alone
    try:
        shared.chmod(0o777)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "HOME": str(shared)}
        yield [runuser, "-u", "nobody", "--", SYSTEM_PYTHON], env, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _as_unprivileged_user(*flags: str) -> dict:
    with _unprivileged() as (python, env, shared):
        run = subprocess.run([*python, str(REPO / "tests/sandbox_catalogue.py"), "--out", str(shared / "report.json"),
                              *flags], env=env, cwd=shared, capture_output=True, text=True, timeout=IDENTITY_SECONDS)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads((shared / "report.json").read_text())
    assert report["uid"] != 0
    return report


@pytest.mark.slow
def test_catalogue_is_contained_as_an_unprivileged_user():
    report = _as_unprivileged_user()
    _check(report, "unprivileged user")
    assert report["isolation"]["identity"].startswith("user namespace"), report["isolation"]
    assert report["isolation"]["signals"] == "pid namespace" and report["isolation"]["network"] == "namespace"


@pytest.mark.slow
def test_catalogue_is_contained_without_user_namespaces():
    """The rung of a pod whose seccomp profile refuses unshare: the host's uid, Landlock's scopes."""
    report = _as_unprivileged_user("--no-user-namespaces")
    _check(report, "unprivileged user without user namespaces")
    isolation = report["isolation"]
    assert isolation["identity"].startswith("host uid") and isolation["signals"] == "landlock scope", isolation
    assert isolation["network"] == "seccomp: no sockets", isolation


def test_a_session_reports_the_whole_boundary_and_keeps_the_paper_modules():
    async def scenario():
        session = await SandboxSession.start(SandboxPolicy(timeout_seconds=10))
        try:
            result = await session.run("import numpy, sympy\nprint(numpy.arange(4).sum(), sympy.sqrt(8))")
            return session.isolation, result
        finally:
            await session.close()

    isolation, result = asyncio.run(scenario())
    assert result.ok and result.stdout == "6 2*sqrt(2)\n", result
    assert isolation["missing"] == [] and isolation["python_layers"] == "on", isolation
    for key in ("filesystem", "syscalls", "network", "signals", "processes", "identity"):
        assert isolation[key] and not isolation[key].startswith("none"), isolation


def test_weak_isolation_is_refused_or_warned_as_the_policy_says(caplog, monkeypatch):
    weak = {"filesystem": "none: Landlock unavailable (Function not implemented)", "missing": ["filesystem"]}
    with pytest.raises(IsolationRefused, match="filesystem: none: Landlock unavailable.*sandbox_isolation: warn"):
        check_isolation(weak, SandboxPolicy())
    with caplog.at_level(logging.WARNING):
        check_isolation(weak, SandboxPolicy(weak_isolation="warn"))
        check_isolation(weak, SandboxPolicy(weak_isolation="warn"))
    assert caplog.text.count("less isolation than they should: filesystem: none") == 1
    check_isolation({"missing": []}, SandboxPolicy())
    with pytest.raises(ValueError, match="weak_isolation must be 'refuse' or 'warn'"):
        SandboxPolicy(weak_isolation="maybe")

    async def refused(*args, **kwargs):
        raise IsolationRefused("no Landlock here")

    monkeypatch.setattr(SandboxSession, "start", refused)

    async def enter():
        async with SandboxPool(SandboxPolicy(), size=2):
            pass

    with pytest.raises(IsolationRefused, match="no Landlock here"):  # the pool's owner fails at once
        asyncio.run(enter())


@pytest.mark.parametrize("arch, header", [("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
                                          ("aarch64", "/usr/include/asm-generic/unistd.h")])
def test_the_syscall_filter_numbers_are_the_kernel_headers(arch, header):
    """The seccomp tables are typed in by hand; a wrong number would let a call through (and refuse
    another). Checked against the kernel's own headers, for the architecture this machine is not too."""
    import re

    from ray_distill.tools.sandbox.confine import _SYSCALLS

    if not os.path.isfile(header):
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = {name: int(number) for name, number in
               re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", Path(header).read_text())}
    newest = max(defined.values())  # calls newer than the headers (fchmodat2 on older ones) come after it
    wrong = {name: (number, defined.get(name)) for name, number in _SYSCALLS[arch].items()
             if defined.get(name) != number and not (name not in defined and number > newest)}
    assert not wrong, f"{arch}: ours vs the header's: {wrong}"


@pytest.mark.parametrize("rung", ["host user", "no user namespaces"])
def test_a_killed_host_leaves_no_sandbox_process_behind(rung, tmp_path):
    """SIGKILL of the host (no close): the sandbox's processes, a child the code left sleeping
    included, die with it. With a pid namespace its init takes them along; on the pod rung,
    without one, the reaper ends the session's process group."""
    host = (
        "import asyncio, sys\n"
        "from ray_distill.tools.sandbox import SandboxPolicy, SandboxSession\n"
        "async def main():\n"
        "    policy = SandboxPolicy(python_layers=False, user_namespaces=sys.argv[1] == 'host user')\n"
        "    session = await SandboxSession.start(policy)\n"
        "    await session.run('import os, time\\nif os.fork() == 0:\\n    time.sleep(300)\\n    os._exit(0)')\n"
        "    print(session.work_dir, session.isolation['signals'], flush=True)\n"
        "    await asyncio.sleep(300)\n"
        "asyncio.run(main())\n")
    with contextlib.ExitStack() as stack:
        if rung == "host user":
            python, env, where = [sys.executable], None, tmp_path
        else:
            python, env, where = stack.enter_context(_unprivileged())
        (where / "host.py").write_text(host)
        proc = subprocess.Popen([*python, str(where / "host.py"), rung], stdout=subprocess.PIPE, text=True, env=env,
                                cwd=where)
        work_dir, signals = proc.stdout.readline().split(" ", 1)
        assert work_dir.startswith("/"), work_dir
        assert ("pid namespace" in signals) == (rung == "host user"), signals

        assert len(processes_with(work_dir)) >= 3  # waiter or reaper, state holder, the sleeping child
        os.kill(proc.pid if rung == "host user" else _child_of(proc.pid), signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while processes_with(work_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(work_dir) == []


def _child_of(pid: int) -> int:
    """runuser's child: the host itself."""
    [child] = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)



def test_on_the_pod_rung_a_sigterm_to_a_candidate_ends_only_that_candidate():
    """There the reaper ends the session on SIGTERM (its parent-death signal); the processes under it do not."""
    host = (
        "import asyncio\n"
        "from ray_distill.tools.sandbox import SandboxPolicy, SandboxSession\n"
        "async def main():\n"
        "    session = await SandboxSession.start(SandboxPolicy(python_layers=False, user_namespaces=False))\n"
        "    ended = await session.run('import os, signal\\nos.kill(os.getpid(), signal.SIGTERM)')\n"
        "    after = await session.run('print(6 * 7)')\n"
        "    print(session.isolation['signals'], '|', ended.error is not None, '|', after.stdout.strip(), flush=True)\n"
        "    await session.close()\n"
        "asyncio.run(main())\n")
    with _unprivileged() as (python, env, where):
        (where / "host.py").write_text(host)
        run = subprocess.run([*python, str(where / "host.py")], env=env, cwd=where, capture_output=True, text=True,
                             timeout=120)
    assert run.stdout.strip() == "landlock scope | True | 42", run.stdout + run.stderr[-2000:]
