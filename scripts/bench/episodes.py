"""Episodes per second: many episodes in flight vs one at a time (hf engine).

    .venv/bin/python scripts/bench/episodes.py [--episodes 16] [--model smollm2-135m-instruct]

The same questions, the same engine, the same sandboxes; only the number of
episodes in flight differs. Concurrency pays because the engine decodes the
steps of all running episodes as one batch, which joins them as they come.
In bfloat16 (the default on CPUs with AMX) a batch's shape can flip a greedy
token, so the two runs may generate different amounts: tokens/s is printed
too. `--dtype float32` makes the trajectories identical (and batching gains
smaller, as float32 matrix products scale worse with rows on CPU).
"""

from __future__ import annotations

import argparse
import asyncio

from common import add_engine_args, hf_engine, run_episodes, summary, world_questions

from ray_distill.agent import Agent, AgentConfig
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.engines import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    add_engine_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--max-steps", type=int, default=3)
    args = parser.parse_args()

    questions, retriever = world_questions(args.episodes)
    engine = hf_engine(args)
    agent = Agent(engine, AgentConfig(max_steps=args.max_steps,
                                      sampling=SamplingParams(max_new_tokens=args.max_new_tokens, stop=STOP_STRINGS)))
    sequential, t_seq = asyncio.run(run_episodes(agent, questions, retriever, concurrency=1))
    concurrent, t_con = asyncio.run(run_episodes(agent, questions, retriever, concurrency=len(questions)))
    print(f"model {args.model}, max_new_tokens {args.max_new_tokens}, max_steps {args.max_steps}")
    for name, records, seconds in (("one at a time", sequential, t_seq), ("all in flight", concurrent, t_con)):
        tokens = sum(s.completion_tokens for r in records for s in r.steps)
        print(f"{name:<15} {len(records) / seconds:7.3f} episodes/s {tokens / seconds:8.1f} tokens/s  ({summary(records)})")
    print(f"concurrent vs sequential: {t_seq / t_con:.2f}x episodes/s (target >= 4x)")


if __name__ == "__main__":
    main()
