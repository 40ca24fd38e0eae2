"""Sandbox execution latency: a warm session vs a fresh interpreter vs in-process exec.

    .venv/bin/python scripts/bench/sandbox.py [--runs 200]

Prints p50/p90 per call of a trivial snippet for: in-process `exec` (no
isolation, the floor), a warm sandbox session (fork per step, limits,
audit hook), and a fresh `python -c` subprocess per call (what a naive
sandbox does), and the ratios measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from ray_distill.tools.sandbox import SandboxPolicy, SandboxSession

SNIPPET = "x = 17 * 23\nprint(x)"


def _pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] * 1000 if len(samples) > 1 else samples[0] * 1000


def bench_exec(runs: int) -> list[float]:
    namespace: dict = {}
    code = compile(SNIPPET, "<code>", "exec")
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        exec(code, namespace)
        out.append(time.perf_counter() - start)
    return out


async def bench_sandbox(runs: int) -> tuple[list[float], dict]:
    session = await SandboxSession.start(SandboxPolicy())
    try:
        for _ in range(5):
            await session.run(SNIPPET)
        out = []
        for _ in range(runs):
            start = time.perf_counter()
            result = await session.run(SNIPPET)
            out.append(time.perf_counter() - start)
            assert result.stdout == "391\n", result
        return out, session.isolation
    finally:
        await session.close()


def bench_subprocess(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True)
        out.append(time.perf_counter() - start)
        assert proc.stdout == "391\n"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    import io
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):
        in_process = bench_exec(args.runs)
    sandbox, isolation = asyncio.run(bench_sandbox(args.runs))
    fresh = bench_subprocess(max(20, args.runs // 5))
    print(f"sandbox isolation: {isolation}")
    print(f"{'path':<28}{'p50 ms':>10}{'p90 ms':>10}")
    for name, samples in (("in-process exec", in_process), ("warm sandbox session", sandbox),
                          ("fresh python -c subprocess", fresh)):
        print(f"{name:<28}{_pct(samples, 50):>10.3f}{_pct(samples, 90):>10.3f}")
    print(f"sandbox vs fresh subprocess: {statistics.median(fresh) / statistics.median(sandbox):.1f}x faster (target >= 10x)")
    print(f"sandbox vs in-process exec:  {statistics.median(sandbox) / statistics.median(in_process):.0f}x slower "
          f"(the price of isolation); sandbox p50 {_pct(sandbox, 50):.2f} ms (target < 5 ms)")


if __name__ == "__main__":
    main()
