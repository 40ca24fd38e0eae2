"""The sandbox as a security boundary: hostile code is contained with a clear
observation, and the session (or at least the pool) keeps working."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ray_distill.tools.sandbox import SandboxError, SandboxPolicy, SandboxPool, SandboxSession, Toolbox

POLICY = SandboxPolicy(timeout_seconds=2.0, memory_bytes=1 << 30, output_limit=2000)

# Reach os functions without importing os: the classic escape from import filters.
OS = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__"


def run(coro):
    return asyncio.run(coro)


async def _with_session(fn, policy=POLICY, toolbox=None):
    session = await SandboxSession.start(policy, toolbox)
    try:
        return await fn(session)
    finally:
        await session.close()


# (name, code, expected error type, text the error message must contain)
HOSTILE = [
    ("fork bomb", "import os\nwhile True:\n    os.fork()", "ImportError", "import of 'os' is not allowed"),
    ("fork bomb via __subclasses__", f"fork = {OS}['fork']\nwhile True:\n    fork()", "PermissionError", "os.fork is not allowed"),
    ("memory bomb", "x = bytearray(10**11)", "MemoryError", ""),
    ("growing memory bomb", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**8))", "MemoryError", ""),
    ("infinite loop", "while True:\n    pass", "TimeoutError", "exceeded 2 s"),
    ("huge integer power", "n = 10\nx = n ** (n ** 9)", "TimeoutError", "exceeded 2 s"),
    # sum() over a range never returns to the eval loop, so no signal can stop it:
    # the state holder kills the candidate process instead.
    ("busy loop in C code", "sum(range(10**13))", "TimeoutError", "exceeded 2 s"),
    ("socket connect", "import socket\nsocket.create_connection(('127.0.0.1', 22))", "ImportError", "'socket' is not allowed"),
    ("socket via __import__ of a loaded module", "s = __builtins__['__import__']('socket')", "ImportError", "not allowed"),
    ("read outside the work dir", "print(open('/etc/passwd').read())", "PermissionError", "outside the working directory"),
    ("write outside the work dir", "open('/tmp/ray-distill-pwned', 'w').write('x')", "PermissionError", "outside the working directory"),
    ("ctypes", "import ctypes\nctypes.CDLL(None).system(b'id')", "ImportError", "'ctypes' is not allowed"),
    ("kill the parent process", f"g = {OS}\ng['kill'](g['getppid'](), 9)", "PermissionError", "os.kill is not allowed"),
    ("spawn a subprocess", f"{OS}['system']('touch /tmp/ray-distill-pwned')", "PermissionError", "os.system is not allowed"),
    ("spawn via posix_spawn", f"g = {OS}\ng['posix_spawn']('/bin/sh', ['sh'], {{}})", "PermissionError", "not allowed"),
    ("1 GB print", "print('x' * 10**9)", None, ""),
    ("endless printing", "while True:\n    print('spam')", "OutputLimitExceeded", "output exceeded 2000"),
    ("hard exit", f"{OS}['_exit'](3)", "ProcessDied", "exited with status 3"),
    ("deep recursion", "def f():\n    return f()\nf()", "RecursionError", ""),
]


@pytest.mark.parametrize("name, code, error_type, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_code_is_contained_and_the_session_survives(name, code, error_type, message):
    async def scenario(session):
        await session.run("before = 41")
        result = await session.run(code)
        after = await session.run("print(before + 1)")
        return result, after

    result, after = run(_with_session(scenario))
    assert result.error is not None, f"{name}: no error reported; stdout={result.stdout[:200]!r}"
    if error_type is None:  # either limit may trip first
        assert result.error["type"] in ("MemoryError", "OutputLimitExceeded"), result.error
    else:
        assert result.error["type"] == error_type, result.error
        assert message in result.error["message"], result.error
    assert len(result.stdout) <= POLICY.output_limit
    assert after.ok and after.stdout == "42\n", f"{name}: session state lost: {after}"
    assert not Path("/tmp/ray-distill-pwned").exists()


def test_environment_secrets_do_not_reach_the_sandbox(monkeypatch):
    monkeypatch.setenv("RAY_DISTILL_TEST_SECRET", "hunter2")
    code = f"env = {OS}['environ']\nprint(dict(env))\nprint(open('/proc/self/environ').read() if False else '')"
    result = run(_with_session(lambda s: s.run(code)))
    assert result.ok, result.error
    assert "hunter2" not in result.stdout and "RAY_DISTILL_TEST_SECRET" not in result.stdout
    assert "'OMP_NUM_THREADS': '1'" in result.stdout


def test_the_network_is_unreachable_even_past_the_import_policy():
    async def scenario(session):
        return session.isolation, await session.run(f"print({OS}['getpid']())")

    isolation, result = run(_with_session(scenario))
    assert result.ok
    if os.geteuid() == 0:
        assert isolation["network"] == "namespace", isolation


def test_files_inside_the_work_dir_are_allowed_and_private():
    async def scenario(session):
        return await session.run("open('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())")

    result = run(_with_session(scenario))
    assert result.ok and result.stdout == "kept\n"


def test_variables_persist_and_errors_point_at_the_line():
    async def scenario(session):
        first = await session.run("import math\nx = math.factorial(5)\nprint(x)")
        second = await session.run("y = x + 1\nprint(y)\nundefined_thing + 1")
        third = await session.run("print(y * 2)\nfinal_answer(y)")
        return first, second, third

    first, second, third = run(_with_session(scenario))
    assert first.stdout == "120\n"
    assert second.stdout == "121\n"
    assert second.error == {"type": "NameError", "message": "name 'undefined_thing' is not defined",
                            "line": 3, "source": "undefined_thing + 1"}
    assert third.has_final_answer and third.final_answer == 121 and third.stdout == "242\n"


def test_the_paper_modules_import_preloaded_or_lazily():
    code = "import numpy as np\nimport sympy\nimport statistics, fractions\nprint(int(np.arange(5).sum()), sympy.sqrt(8))"
    result = run(_with_session(lambda s: s.run(code), policy=SandboxPolicy(timeout_seconds=20)))
    assert result.ok, result.error
    assert result.stdout == "10 2*sqrt(2)\n"


def test_syntax_errors_are_reported_with_their_line():
    result = run(_with_session(lambda s: s.run("x = 1\nif x\n    print(x)")))
    assert result.error["type"] == "SyntaxError" and result.error["line"] == 2


def test_tool_calls_go_to_the_host_and_back():
    seen = []

    async def tools(name, args, kwargs):
        seen.append((name, args, kwargs))
        if args and args[0] == "fail":
            raise RuntimeError("index offline")
        return f"3 documents about {kwargs.get('query') or args[0]}"

    async def scenario(session):
        ok = await session.run("r = web_search(query='Paris')\nprint(r)")
        bad = await session.run("web_search('fail')")
        missing = await session.run("print(wikipedia('x'))")
        return ok, bad, missing

    ok, bad, missing = run(_with_session(scenario, toolbox=Toolbox(tools)))
    assert ok.stdout == "3 documents about Paris\n"
    assert ok.tool_calls == [{"name": "web_search", "args": [], "kwargs": {"query": "Paris"}, "value": "3 documents about Paris"}]
    assert bad.error["type"] == "ToolError" and "index offline" in bad.error["message"]
    assert seen[0] == ("web_search", [], {"query": "Paris"})
    assert missing.error["type"] == "NameError"  # only the toolbox's names exist in the sandbox



def test_tool_calls_past_the_limit_fail_in_the_code_and_a_forged_flood_ends_the_session():
    from dataclasses import replace

    served = []

    async def tools(name, args, kwargs):
        served.append(args[0])
        return "found"

    loop = ("failed = []\nfor n in range(8):\n    try:\n        web_search(f'q{n}')\n"
            "    except Exception as e:\n        failed.append(str(e))\nprint(len(failed), failed[-1])")
    # Forged calls go straight to the host's pipe and wait for no reply.
    flood = ("import json, os, struct\nfor n in range(100):\n"
             "    body = json.dumps({'op': 'tool_call', 'candidate': 0, 'name': 'web_search', 'args': [str(n)], 'kwargs': {}})\n"
             "    os.write(1, struct.pack('>I', len(body)) + body.encode())\nimport time\ntime.sleep(30)")

    async def scenario(session):
        capped = await session.run(loop)
        again = await session.run("print(web_search('next'))")  # the limit is per code block
        with pytest.raises(SandboxError, match="tool calls past twice the limit of 5"):
            await session.run(flood)
        return capped, again

    policy = replace(POLICY, tool_calls_per_step=5, python_layers=False)
    capped, again = run(_with_session(scenario, policy=policy, toolbox=Toolbox(tools)))
    assert capped.stdout.startswith("3 ToolLimit: more than 5 tool calls in one step"), capped
    assert len(capped.tool_calls) == 6 and "ToolLimit" in capped.tool_calls[-1]["error"]
    assert again.stdout == "found\n"
    assert served[:6] == ["q0", "q1", "q2", "q3", "q4", "next"] and len(served) <= 6 + 5

def test_candidates_run_on_isolated_copies_and_the_chosen_state_is_kept():
    async def scenario(session):
        await session.run("x = 0\nlog = []")
        results = await session.run_candidates(
            ["x = 1\nlog.append('a')\nprint(x)", "x = 2\nlog.append('b')\nprint(x)", "x = 3\nraise ValueError('bad')"]
        )
        chosen = await session.choose(1)
        after = await session.run("print(x, log)")
        await session.run_candidates(["x = 100", "x = 200"])
        kept = await session.choose(None)
        unchanged = await session.run("print(x, log)")
        return results, chosen, after, kept, unchanged

    results, chosen, after, kept, unchanged = run(_with_session(scenario))
    assert [r.stdout for r in results] == ["1\n", "2\n", ""]
    assert results[2].error["type"] == "ValueError"
    assert chosen == 1 and after.stdout == "2 ['b']\n"
    assert kept is None and unchanged.stdout == "2 ['b']\n"


def test_a_long_session_keeps_its_stack_flat():
    # Each adopted step (a plain one, or a chosen candidate) once added the state holder's frames to its
    # stack: a session failed every step with RecursionError after about 330 steps.
    async def scenario(session):
        for i in range(400):
            await session.run(f"x = {i}")
        for i in range(50):
            await session.run_candidates([f"x = {i}", "x = -1"])
            await session.choose(0)
        return await session.run("def depth(n):\n    return n if n == 0 else depth(n - 1)\nprint(depth(800), x)")

    result = run(_with_session(scenario))
    assert result.ok, result.error
    assert result.stdout == "0 49\n"


def test_a_killed_candidate_cannot_be_chosen_and_others_still_can():
    async def scenario(session):
        await session.run("x = 5")
        results = await session.run_candidates(["sum(range(10**13))", "x = 6\nprint(x)"])
        dead = await session.choose(0)
        results = await session.run_candidates(["sum(range(10**13))", "x = 6\nprint(x)"])
        alive = await session.choose(1)
        return results, dead, alive, await session.run("print(x)")

    results, dead, alive, final = run(_with_session(scenario, policy=SandboxPolicy(timeout_seconds=1.0)))
    assert results[0].killed and results[0].error["type"] == "TimeoutError"
    assert dead is None and alive == 1 and final.stdout == "6\n"


def test_concurrent_candidates_get_their_own_tool_results():
    async def tools(name, args, kwargs):
        await asyncio.sleep(0.05 * (3 - len(args[0])))  # answer out of order
        return args[0].upper()

    async def scenario(session):
        return await session.run_candidates([f"print(web_search('{'q' * (i + 1)}'))" for i in range(3)])

    results = run(_with_session(scenario, toolbox=Toolbox(tools)))
    assert [r.stdout for r in results] == ["Q\n", "QQ\n", "QQQ\n"]
    assert [len(r.tool_calls) for r in results] == [1, 1, 1]


def test_pool_gives_fresh_sessions_and_survives_dead_ones():
    async def scenario():
        async with SandboxPool(POLICY, size=2) as pool:
            async with pool.session() as first:
                await first.run("secret = 'episode one'")
                await first.close()  # the sandbox died mid-episode
                with pytest.raises(SandboxError):
                    await first.run("print(1)")
            async with pool.session() as second:
                result = await second.run("print('secret' in dir())")
            return result, pool.started

    result, started = run(scenario())
    assert result.stdout == "False\n"  # nothing leaks from one episode to the next
    assert started >= 2


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="timeout_seconds must be > 0"):
        SandboxPolicy(timeout_seconds=0)


def test_work_dirs_of_dead_hosts_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from ray_distill.tools.sandbox.oslimits import WORK_DIR_PREFIX, make_work_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{WORK_DIR_PREFIX}{dead.stdout.strip()}-abc"
    live = tmp_path / f"{WORK_DIR_PREFIX}{os.getpid()}-def"
    stale.mkdir()
    live.mkdir()
    fresh = make_work_dir()
    assert not stale.exists() and live.exists()
    assert Path(fresh).name.startswith(f"{WORK_DIR_PREFIX}{os.getpid()}-")


def test_a_step_that_cannot_start_is_an_observation_and_the_session_lives_on():
    async def scenario(session):
        # The state now holds every descriptor the limit allows: the next step cannot get its pipes.
        await session.run("handles = []\ntry:\n    while True:\n        handles.append(open('/dev/null'))\nexcept OSError:\n    pass")
        return await session.run("print(1)"), session.alive

    starved, alive = run(_with_session(scenario))
    assert alive
    assert starved.killed and starved.error["type"] == "ResourceError", starved
    assert "could not start this code" in starved.error["message"]
