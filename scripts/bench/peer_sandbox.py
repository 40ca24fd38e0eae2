"""Our sandbox against smolagents' LocalPythonExecutor: latency on a mix of agent actions, SAG fan-out, containment.

    .venv/bin/python scripts/bench/peer_sandbox.py [--quick]

LocalPythonExecutor (smolagents) runs agent code in the host process through its own AST interpreter,
with an import allow-list and no OS boundary ("not a security sandbox", its docstring says); our
session runs it in a forked, confined process (`ray_distill/tools/sandbox`). Measured in one run, on
the same machine (`--quick`: one warm session of ten episodes, two cold episodes, 50 trivial steps,
the first catalogue case of each kind on both sides, each cut said in the output):

- The mix: nine CodeAct actions as a teacher writes them for fact and math questions (a `web_search`
  call, string work, arithmetic, a 1000-iteration loop, sympy solve/factor/simplify, a numpy
  reduction, `final_answer`), run in order as the steps of an episode (variables carried between
  steps); p50/p99 per action and of the whole mix. Warm, as the issue's target measures it: 100
  episodes, ten in each of ten sessions (the default `SandboxPolicy`), each session warmed by one
  uncounted episode (sympy imported, its caches filled), the peer a fresh executor per episode (its
  defaults, the 30 s timeout and its thread per call included) in this warm process. Then, for
  information, ten episodes each in a fresh session, as the pool serves episodes: ours pays sympy's
  import and cold caches in every episode, the peer once per process. The repository stores no
  teacher trajectory, so the actions are written here in that style; like the teacher's, each
  carries its own imports (the peer copies a module on every import: part of its cost per step).
  Both sides get the same `web_search` (a fixed retriever answering every query with the same three
  passages: ours through its Toolbox, served on the host; the peer as a plain function in
  `additional_functions`, the cheapest way it offers, where a CodeAgent would wrap it as a Tool),
  the same allow-list (ours, `PAPER_IMPORTS`), and must print the same thing. Each action runs on
  ours, then on the peer, so drift of the machine hits both alike.
- The trivial statement `x = 17 * 23; print(x)` in a fresh warm session and a fresh executor: the
  fixed cost of a step.
- The model's turn: in an agent every step follows a model call that writes it (a second or more for
  the teacher), and our session uses that time to fork the next step's process ahead. So each timed
  step, on both sides, follows an untimed pause of MODEL_TURN_SECONDS (20 ms, far below any real
  model call). For information, the trivial statement is also timed back to back, with no turn
  between steps: the case where the fork is not hidden.
- SAG fan-out: k candidate actions from the state at the end of each warm episode, then one kept.
  Ours forks one process per candidate (`run_candidates`, `choose`), in parallel; the peer has no
  such API, so each candidate runs, one after another, on a `copy.deepcopy` of the executor's state
  (modules shared: they cannot be copied), the way a smolagents user would isolate them. Wall time
  of k=5 and of k=1.
- Containment: ours is the hostile catalogue's own runner (`tests/sandbox_catalogue.py`, Python
  layers off, the OS boundary alone). For the peer, every case runs through LocalPythonExecutor
  (the same allow-list) in a fresh session of our sandbox (the catalogue's policy, Python layers off),
  never in this process, where `os.system`, kills and disk fills would run for real. Inside that
  child an audit hook records, and only records, the security-relevant events the case causes:
  process creation (os.system, exec, spawn, fork, subprocess), signals, ctypes, sockets, mmap,
  rlimits and identity changes, and file access outside the working directory (reads also outside
  the module search path). The peer contained a case when its executor refused the code (raised)
  before any such event, and our sandbox had to stop nothing. It did not when an event fired (the
  action reached the OS, where only our boundary stopped it), when the code ran to its end, or when
  our sandbox killed the step or ended the session (its memory, CPU, process or disk limits, its
  wall-clock kill, its protocol checks). Resource cases (threads, forks, fds, disk, memory, loops)
  follow the same rule, so they count as contained only if the executor itself stopped them (its
  refusal, its operation and loop caps, its timeout, set to 5 s below our 10 s step limit so it
  acts first); a MemoryError is our memory limit's, as the peer has none. Most cases open with an
  import or a name any allow-list refuses (the catalogue tests our boundary with the Python layers
  off); the ones that reach the OS through what the allow-list admits (numpy's file functions) or
  exhaust the machine in plain Python (a loop in C, a huge string) are where the two differ.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.metadata
import inspect
import os
import statistics
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

from ray_distill.agent import retrieval_tools
from ray_distill.tools.retrieval.index import Hit, format_hits
from ray_distill.tools.sandbox import PAPER_IMPORTS, SandboxError, SandboxPolicy, SandboxPool, SandboxSession
from smolagents.local_python_executor import LocalPythonExecutor

sys.path.append(str(Path(__file__).resolve().parents[2] / "tests"))  # the hostile catalogue lives with the tests
from peers import print_result  # noqa: E402
from sandbox_catalogue import CASES, Environment, catalogue_policy, run_case, run_catalogue  # noqa: E402

MIX = (
    ("web_search call", 'result = web_search("Venhall University founded")\nprint(result)'),
    ("string work: regex, split, format",
     "import re\nyears = [int(y) for y in re.findall(r'\\b(1[0-9]{3}|20[0-9]{2})\\b', result)]\nfounded = years[0]\n"
     "first = result.split('\\n')[1].split('.')[0]\nprint(f'Founded in {founded}, {2024 - founded} years ago: {first}.')"),
    ("arithmetic", "cost = 4 * 3 + 5 * 7\nchange = 50 - cost\nprint(cost, change)"),
    ("1000-iteration loop",
     "total = 0\nfor i in range(1, 1001):\n    if i % 3 == 0 or i % 5 == 0:\n        total += i\nprint(total)"),
    ("sympy solve",
     "from sympy import symbols, Eq, solve\nx = symbols('x')\nroots = solve(Eq(3 * x**2 - 12 * x + 9, 0), x)\nprint(roots)"),
    ("sympy factor", "from sympy import factor\nprint(factor(x**3 - 6 * x**2 + 11 * x - 6))"),
    ("sympy simplify",
     "from sympy import simplify, sin, cos\nprint(simplify(sin(x)**2 + cos(x)**2 + (x**2 - 1) / (x - 1)))"),
    ("numpy reduction", "import numpy as np\nscores = np.array([72, 85, 90, 66, 78, 95, 88, 61, 79, 83])\n"
                        "print(scores.mean(), scores.std().round(3), np.percentile(scores, 90))"),
    ("final_answer", "final_answer(change)"),
)
TRIVIAL = "x = 17 * 23\nprint(x)"
# Five ways a sampled step could compute the same change: SAG's candidates for one step.
CANDIDATES = (
    "cost = 4 * 3 + 5 * 7\nchange = 50 - cost\nprint(change)",
    "print(50 - (4 * 3 + 5 * 7))",
    "change = 50 - 4 * 3 - 5 * 7\nprint(change)",
    "pens, notebooks = 4 * 3, 5 * 7\nprint(50 - pens - notebooks)",
    "total = sum([3] * 4 + [7] * 5)\nprint(50 - total)",
)
PASSAGES = (
    Hit("p1", "Venhall University\nVenhall University was founded in 1821 and has about 9000 students.", 0.86),
    Hit("p2", "Venhall\nVenhall is a town on the northern coast.", 0.61),
    Hit("p3", "Mara Olin\nMara Olin is a chemist who studied at Venhall University before joining a research "
              "institute.", 0.44),
)
# Episodes spread over several sessions, so that the samples are not one process's memory layout.
EPISODES_PER_SESSION = 10
PEER_TIMEOUT_SECONDS = 5  # the peer's own timeout, below our step limit so that it acts first
PEER_STEP_SECONDS = 10.0
MODEL_TURN_SECONDS = 0.02  # untimed, before every timed step on both sides: the model writing the action


class FixedRetriever:
    """The same three passages for every query: both sides pay for the tool call, not for a search."""

    def search(self, queries, k: int = 3) -> list[list[Hit]]:
        return [list(PASSAGES[:k]) for _ in queries]


def peer_executor(retriever: FixedRetriever) -> LocalPythonExecutor:
    def web_search(query: str) -> str:
        return format_hits(retriever.search([query], 3)[0])

    def final_answer(answer):
        return answer

    executor = LocalPythonExecutor(additional_authorized_imports=list(PAPER_IMPORTS),
                                   additional_functions={"web_search": web_search, "final_answer": final_answer})
    executor.send_tools({})
    return executor


def _same(what: str, ours, peer) -> None:
    """Both sides must have done the same work: a failed or different action is a broken bench, not a figure."""
    mine = ours.final_answer if ours.has_final_answer else ours.stdout
    theirs = peer.output if peer.is_final_answer else peer.logs
    if not ours.ok or mine != theirs:
        raise RuntimeError(f"{what}: the two sides disagree: ours {ours.error or mine!r}, peer {theirs!r}")


def _ms(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000


async def measure_mix(sessions: int, episodes: int, warm: bool) -> dict:
    """Seconds per action and per SAG fan-out, each side: `episodes` episodes of the mix in each of `sessions`
    sessions, after one uncounted episode in each if `warm`. The peer gets a fresh executor per episode."""
    retriever = FixedRetriever()
    k = len(CANDIDATES)
    times = {"ours": {name: [] for name, _ in MIX}, "peer": {name: [] for name, _ in MIX},
             "fan_out": {(side, n): [] for side in ("ours", "peer") for n in (1, k)}}
    for _ in range(sessions):
        session = await SandboxSession.start(SandboxPolicy(), retrieval_tools(retriever))
        try:
            for episode in range(episodes + warm):
                counted = episode >= warm
                peer = peer_executor(retriever)
                for name, code in MIX:
                    mine, ours_seconds = await timed(MODEL_TURN_SECONDS, lambda: session.run(code))
                    other, peer_seconds = await timed(MODEL_TURN_SECONDS, lambda: peer(code))
                    _same(name, mine, other)
                    if counted:
                        times["ours"][name].append(ours_seconds)
                        times["peer"][name].append(peer_seconds)
                for n in (1, k):  # SAG from the episode's last state
                    mine, ours_seconds = await timed(MODEL_TURN_SECONDS, lambda: sag(session, CANDIDATES[:n]))
                    other, peer_seconds = await timed(MODEL_TURN_SECONDS, lambda: peer_candidates(peer, CANDIDATES[:n]))
                    for i, (a, b) in enumerate(zip(mine, other)):
                        _same(f"SAG candidate {i}", a, b)
                    if counted:
                        times["fan_out"]["ours", n].append(ours_seconds)
                        times["fan_out"]["peer", n].append(peer_seconds)
            times["isolation"] = session.isolation
        finally:
            await session.close()
    return times


async def timed(turn: float, step) -> tuple:
    """`step()` (a value or an awaitable) after `turn` seconds of untimed pause: its value and its seconds."""
    await asyncio.sleep(turn)
    start = time.perf_counter()
    value = step()
    if inspect.isawaitable(value):
        value = await value
    return value, time.perf_counter() - start


async def sag(session: SandboxSession, codes) -> list:
    """SAG on ours: the candidates forked from one state, in parallel, then the first one's state kept."""
    results = await session.run_candidates(codes)
    await session.choose(0)
    return results


def peer_candidates(executor: LocalPythonExecutor, codes) -> list:
    """SAG on the peer: each candidate on its own deep copy of the state, then the first one's state kept."""
    base = executor.state
    modules = {id(v): v for v in base.values() if isinstance(v, types.ModuleType)}
    outputs, states = [], []
    for code in codes:
        executor.state = copy.deepcopy(base, dict(modules))
        outputs.append(executor(code))
        states.append(executor.state)
    executor.state = states[0]
    return outputs


async def measure_trivial(reps: int, turn: float) -> tuple[list[float], list[float]]:
    """The trivial statement on each side, each step after `turn` seconds of untimed pause."""
    peer = peer_executor(FixedRetriever())
    session = await SandboxSession.start(SandboxPolicy())
    try:
        ours, theirs = [], []
        for rep in range(reps + 5):  # five warm-up steps each
            mine, ours_seconds = await timed(turn, lambda: session.run(TRIVIAL))
            other, peer_seconds = await timed(turn, lambda: peer(TRIVIAL))
            _same("trivial statement", mine, other)
            if rep >= 5:
                ours.append(ours_seconds)
                theirs.append(peer_seconds)
        return ours, theirs
    finally:
        await session.close()


# Run once in each of the peer's sessions (and kept by it): the stdlib's probes for a temporary directory
# and for a library's path need unlink and exec, which the sandbox refuses, and smolagents' imports use both.
PEER_SETUP = """\
import os, tempfile, ctypes.util
tempfile.tempdir = os.getcwd()
ctypes.util.find_library = lambda name: None
from smolagents.local_python_executor import LocalPythonExecutor
"""

# One hostile case (_CODE) through the peer. The audit hook only records what the case does that reaches
# the OS, into a file as it happens (a case may kill its process), from just before the executor runs; after it
# returns, only from other threads (the case's), as the session then forks its next step's process.
PEER_CASE = """\
import os, sys, threading
_work = os.path.realpath(os.getcwd())
_reads = tuple(os.path.realpath(p) for p in sys.path if p) + (
    "/dev/null", "/dev/urandom", "/dev/random", "/dev/zero", "/etc/localtime", "/usr/share/zoneinfo", "/etc/ld.so.cache")
_log = os.open("peer-events.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
_ALWAYS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
           "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
           "os.setuid", "os.setgid", "os.setsid", "os.setpgid", "os.chroot", "mmap.__new__", "sys.remote_exec"}
_TWO_PATHS = {"os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.move"}
_PATHS = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime", "os.chdir",
          "os.listdir", "os.scandir", "shutil.rmtree"}

def _outside(path, reading):
    if path is None or isinstance(path, int):
        return False
    real = os.path.realpath(os.fsdecode(path))
    return not any(real == r or real.startswith(r + os.sep) for r in (_work, *(_reads if reading else ())))

def _record(event, args):
    if not _recording and threading.get_ident() == _main:
        return  # after the executor, in its thread: our session's own work (it forks the next step ahead)
    if event == "open":
        path, mode, flags = args
        writing = (any(c in mode for c in "wax+") if mode
                   else bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        hit = _outside(path, not writing)
    elif event in _TWO_PATHS:
        hit = any(_outside(a, False) for a in args[:2])
    elif event in _PATHS:
        hit = bool(args) and _outside(args[0], event in ("os.listdir", "os.scandir"))
    else:
        hit = event in _ALWAYS or event.startswith(("ctypes.", "socket."))
    if hit:
        os.write(_log, (event + " " + repr(args)[:120].replace("\\n", " ") + "\\n").encode())

_executor = LocalPythonExecutor(additional_authorized_imports=_IMPORTS, timeout_seconds=_TIMEOUT)
_executor.send_tools({})
_recording, _main = True, threading.get_ident()
sys.addaudithook(_record)
try:
    _executor(_CODE)
    _outcome = "ran"
except BaseException as e:
    _outcome = f"{type(e).__name__}: {e}"
_recording = False
print("outcome: " + _outcome[:200].replace("\\n", " "))
"""


async def peer_case(case, env: Environment, policy: SandboxPolicy, sibling: SandboxSession) -> dict:
    """One case through the peer in a fresh session of ours: did the peer contain it, and why (not)."""
    session = await SandboxSession.start(policy)
    result, ended, events = None, None, []
    try:
        setup = await session.run(PEER_SETUP)
        if not setup.ok:
            raise RuntimeError(f"smolagents does not import inside the sandbox: {setup.error}")
        code = env.fill(case.code, os.getpid(), sibling.pid)
        step = (f"_CODE = {code!r}\n_IMPORTS = {list(PAPER_IMPORTS)!r}\n_TIMEOUT = {PEER_TIMEOUT_SECONDS}\n"
                + PEER_CASE)
        try:
            result = await session.run(step)
        except SandboxError as e:
            ended = str(e)
        if session.alive:
            log = Path(session.work_dir, "peer-events.log")
            events = log.read_text().splitlines() if log.exists() else []
        else:  # the events went with its working directory
            ended = ended or session.failure or "the sandbox process exited"
    finally:
        await session.close()
    reasons = []
    if ended:
        reasons.append(f"our sandbox ended the session: {ended}")
    elif result.killed:
        reasons.append(f"our sandbox stopped it: {result.error['message']}")
    elif result.error:
        error = result.error
        reasons.append(f"it broke out of the executor's harness: {error['type']}: {error['message'][:80]}")
    if events:
        reasons.append(f"reached the OS: {'; '.join(events[:2])[:160]}")
    outcome = result.stdout.strip().rpartition("outcome: ")[2] if result is not None else ""
    if "MemoryError" in outcome:  # the peer has no memory limit: this was our RLIMIT_AS
        reasons.append(f"our memory limit stopped it: {outcome[:100]}")
    observed = "" if result is None else f"{result.stdout}\n{result.error}"
    if not reasons and outcome == "ran":
        reasons.append("the executor ran it to the end")
    return {"name": case.name, "kind": case.kind, "contained": not reasons,
            "why": "; ".join(reasons) or f"refused: {outcome[:100]}", "breaches": env.breaches(observed)}


async def measure_ours(cases) -> list[dict]:
    """`cases` as the catalogue runs its own: its runner of one case, its policy (Python layers off)."""
    policy = catalogue_policy()
    async with Environment() as env, SandboxPool(policy, size=1) as pool:
        sibling = await SandboxSession.start(policy)
        try:
            results = []
            for case in cases:
                results.append(await run_case(case, env, pool, sibling))
                if not sibling.alive:  # a case that killed it is reported; the next needs a live one
                    sibling = await SandboxSession.start(policy)
            return results
        finally:
            await sibling.close()


async def measure_peer_containment(cases) -> list[dict]:
    policy = replace(catalogue_policy(), timeout_seconds=PEER_STEP_SECONDS)
    async with Environment() as env:
        sibling = await SandboxSession.start(policy)
        try:
            results = []
            for case in cases:
                results.append(await peer_case(case, env, policy, sibling))
                if not sibling.alive:
                    sibling = await SandboxSession.start(policy)
            return results
        finally:
            await sibling.close()


def _latency_row(metric: str, ours: list[float], peer: list[float], target: str = "") -> dict:
    def figure(samples):
        return f"{_ms(samples, 50):.2f} / {_ms(samples, 99):.2f} ms"

    ratio = statistics.median(peer) / statistics.median(ours)
    return {"metric": metric, "ours": figure(ours), "peer": figure(peer), "ratio": round(ratio, 2), "target": target,
            "met": None}


def _containment_rows(ours: list[dict], peer: list[dict], quick: bool) -> list[dict]:
    """Per kind of the catalogue, its total (the target), and the cases beyond it."""
    def count(results, kind=None):
        picked = [r for r in results if kind is None or r["kind"] == kind]
        return f"{sum(r['contained'] for r in picked)}/{len(picked)}", picked

    rows, subset = [], " (quick: one case)" if quick else ""
    for kind in dict.fromkeys(case.kind for case in CASES):
        rows.append({"metric": f"hostile catalogue, {kind}: cases contained", "ours": count(ours, kind)[0] + subset,
                     "peer": count(peer, kind)[0] + subset, "ratio": None, "target": "", "met": None})
    (ours_figure, ours_all), (peer_figure, peer_all) = count(ours), count(peer)
    ours_share = sum(r["contained"] for r in ours_all) / len(ours_all)
    peer_share = sum(r["contained"] for r in peer_all) / len(peer_all)
    subset = " (quick: one case per kind)" if quick else ""
    rows.append({"metric": "hostile catalogue: cases contained (ratio: ours' share / the peer's)",
                 "ours": ours_figure + subset, "peer": peer_figure + subset,
                 "ratio": round(ours_share / peer_share, 2) if peer_share else None,
                 "target": "ours contains the whole catalogue", "met": ours_share == 1.0})
    return rows


def measure(quick: bool = False) -> dict:
    sessions, cold_episodes, trivial_reps = (1, 2, 50) if quick else (10, 10, 200)
    mix = asyncio.run(measure_mix(sessions, EPISODES_PER_SESSION, warm=True))
    cold = asyncio.run(measure_mix(cold_episodes, 1, warm=False))
    trivial_ours, trivial_peer = asyncio.run(measure_trivial(trivial_reps, MODEL_TURN_SECONDS))
    back_to_back = asyncio.run(measure_trivial(trivial_reps, 0.0))
    catalogue = [c for i, c in enumerate(CASES) if c.kind not in {d.kind for d in CASES[:i]}] if quick else CASES
    ours = (asyncio.run(measure_ours(catalogue)) if quick
            else asyncio.run(run_catalogue(catalogue_policy()))["results"])
    ours = [{**r, "contained": not r["problems"]} for r in ours]
    peer = asyncio.run(measure_peer_containment(catalogue))

    rows = [_latency_row(f"mix: {name}, p50 / p99 (ratio: peer p50 / ours)", mix["ours"][name], mix["peer"][name])
            for name, _ in MIX]
    whole = {side: [sum(step) for step in zip(*mix[side].values())] for side in ("ours", "peer")}
    row = _latency_row(f"mix: all {len(MIX)} actions as one episode, p50 / p99 (ratio: peer / ours)",
                       whole["ours"], whole["peer"], "ours <= peer (ratio >= 1)")
    rows.append({**row, "met": row["ratio"] >= 1.0})
    cold_whole = {side: [sum(step) for step in zip(*cold[side].values())] for side in ("ours", "peer")}
    rows.append(_latency_row("mix, cold: one episode per fresh session, as the pool serves them, p50 / p99 "
                             "(ratio: peer / ours)", cold_whole["ours"], cold_whole["peer"]))
    row = _latency_row("trivial statement `x = 17 * 23; print(x)`, p50 / p99 (ratio: peer / ours)", trivial_ours,
                       trivial_peer, "ours within 10x of peer (ratio >= 0.1)")
    rows.append({**row, "met": row["ratio"] >= 0.1})
    rows.append(_latency_row("trivial statement, back to back (no model turn between steps), p50 / p99 "
                             "(ratio: peer / ours)", *back_to_back))
    k, fan = len(CANDIDATES), mix["fan_out"]

    def fan_figure(side):
        growth = statistics.median(fan[side, k]) / statistics.median(fan[side, 1])
        return f"{_ms(fan[side, k], 50):.2f} ms, {growth:.2f}x its k=1"

    rows.append({"metric": f"SAG fan-out: k={k} candidates from one state, p50 wall (ratio: peer / ours)",
                 "ours": fan_figure("ours"), "peer": fan_figure("peer"),
                 "ratio": round(statistics.median(fan["peer", k]) / statistics.median(fan["ours", k]), 2),
                 "target": "", "met": None})
    rows += _containment_rows(ours, peer, quick)

    isolation = mix["isolation"]
    boundary = ", ".join(f"{key} {isolation.get(key)}"
                         for key in ("identity", "filesystem", "syscalls", "network", "signals"))
    notes = [
        f"samples: {sessions * EPISODES_PER_SESSION} warm episodes in {sessions} sessions, {cold_episodes} cold "
        f"ones, {trivial_reps} trivial steps" + (" (--quick)" if quick else ""),
        f"every timed step on both sides follows an untimed {MODEL_TURN_SECONDS * 1000:g} ms pause, the model's "
        "turn (a real one takes far longer), in which our session forks the next step's process",
        f"our sessions' boundary: {boundary}",
        f"the peer has no OS boundary; its cases ran inside ours; {len(catalogue)} of the catalogue's {len(CASES)} "
        "cases ran" + (" (--quick: the first case of each kind, on both sides)" if quick else ""),
        *[f"the peer does not contain '{r['name']}': {r['why']}" for r in peer if not r["contained"]],
        *[f"BREACH while the peer ran '{r['name']}' inside our sandbox: {r['breaches']}"
          for r in peer if r["breaches"]],
        *[f"ours does not contain '{r['name']}': {r['problems']}" for r in ours if r["problems"]],
    ]
    return {"title": "Sandbox: our session vs smolagents' LocalPythonExecutor", "rows": rows, "notes": notes,
            "versions": {"smolagents": importlib.metadata.version("smolagents")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions; the first catalogue case of each kind, on both sides")
    args = parser.parse_args()
    print_result(measure(args.quick))

if __name__ == "__main__":
    main()
