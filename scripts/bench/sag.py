"""The cost of SAG: N=8 sampled actions per step vs one, per step (hf engine).

    .venv/bin/python scripts/bench/sag.py [--episodes 6] [--n 8]

The N candidates share one prefilled prompt and decode as one batch, and
run in forks of one sandbox session, so a step costs far less than N steps.
"""

from __future__ import annotations

import argparse
import asyncio

from common import add_engine_args, hf_engine, run_episodes, summary, world_questions

from ray_distill.agent import Agent, AgentConfig, SAGConfig
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.engines import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--n", type=int, default=8)
    add_engine_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    questions, retriever = world_questions(args.episodes)
    engine = hf_engine(args)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop=STOP_STRINGS)
    # Episodes one at a time, so each step's cost is measured alone.
    plain = Agent(engine, AgentConfig(max_steps=2, sampling=sampling, sag=SAGConfig(n=1)))
    sag = Agent(engine, AgentConfig(max_steps=2, sampling=sampling, sag=SAGConfig(n=args.n)))
    one, _ = asyncio.run(run_episodes(plain, questions, retriever, concurrency=1))
    many, _ = asyncio.run(run_episodes(sag, questions, retriever, concurrency=1))

    def per_step(records):
        steps = [s for r in records for s in r.steps]
        return sum(s.generation_seconds + s.execution_seconds for s in steps) / len(steps), steps

    (t1, _), (tn, sn) = per_step(one), per_step(many)
    print(f"model {args.model}, max_new_tokens {args.max_new_tokens}")
    print(f"1 sample per step:  {t1:6.2f} s/step  ({summary(one)})")
    print(f"{args.n} samples per step: {tn:6.2f} s/step  ({summary(many)}), "
          f"{sum(s.valid_candidates for s in sn) / len(sn):.1f} valid candidates per step")
    print(f"SAG N={args.n} vs 1: {tn / t1:.2f}x the cost per step (target <= 2.5x)")


if __name__ == "__main__":
    main()
