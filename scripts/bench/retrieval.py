"""Retrieval throughput: in-process search vs the Ray service with 1 and 2 shards.

    .venv/bin/python scripts/bench/retrieval.py [--passages 100000] [--clients 64] [--queries 1500]

One run prints: raw faiss search QPS (vectors in), the in-process sharded
retriever's QPS on batches (text in: embed + search + passages), and the
service's QPS with concurrent clients sending one query each at a time, with
p50/p99 latency and memory per shard. The service's target is >= 0.8x the
in-process retriever, which does the same work without Ray. The corpus is a
generated world; its index is built once (the index stage, two shards) and
kept in --cache-dir; the one-shard layout is made from the same embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from ray_distill.config import load_config
from ray_distill.stages.pipeline import run_pipeline
from ray_distill.tools.retrieval import Encoder, IndexKind, ShardedRetriever, build_index, write_passages, write_shard
from ray_distill.tools.retrieval.index import read_corpus

REPO = Path(__file__).resolve().parents[2]


def build(cache: Path, passages: int) -> tuple[list[Path], list[Path], list[str]]:
    """(two-shard dirs, one-shard dirs, query texts), built once per corpus size."""
    run_dir = cache / f"world-{passages}"
    config = load_config(REPO / "experiments/quickstart.yaml", [
        f"run.dir={run_dir}", "run.stages=[world,index]", f"world.num_passages={passages}",
        "world.num_fact_questions=400", "world.num_math_questions=0", f"index.passages_per_shard={(passages + 1) // 2}",
        f"index.encoder_cpus={os.cpu_count()}"])
    run_pipeline(config)
    two = sorted((run_dir / "index").glob("shard-*"))
    one = run_dir / "one-shard"
    if not (one / "manifest.json").is_file():
        records = [r for d in two for r in read_corpus([d / "passages.parquet"])]
        write_passages(one, [r["id"] for r in records], [r["contents"] for r in records])
        vectors = np.concatenate([np.load(d / "embeddings.npy") for d in two])
        write_shard(one, build_index(vectors, IndexKind("flat")), "minilm-l6", IndexKind("flat"))
    questions = json.loads((run_dir / "world" / "questions" / "fact_train.json").read_text())["examples"]
    return two, [one], [q["question"] for q in questions]


async def closed_loop(client, queries: list[str], clients: int) -> tuple[float, list[float]]:
    """`clients` callers, each sending its next query when the last is answered; (QPS, latencies)."""
    pending = iter(queries)
    latencies: list[float] = []

    async def caller():
        for query in pending:
            start = time.perf_counter()
            await client.asearch([query], 3)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return len(queries) / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="queries per in-process search call")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "ray-distill" / "bench-retrieval")
    args = parser.parse_args()

    import ray

    from ray_distill.distributed.cluster import init_ray
    from ray_distill.distributed.retrieval import RetrievalClient

    # Ray gives an actor as many torch/faiss threads as CPUs it reserves: the encoders and routers
    # (which embed) get the machine's cores, and the shards share them, as the in-process
    # retriever uses every core for each phase. Logical CPUs beyond the cores let them all be
    # placed; the router and the shards take turns on a batch, so they rarely overlap.
    cores = os.cpu_count()
    init_ray(num_cpus=2 * cores)
    two, one, questions = build(args.cache_dir, args.passages)
    # Distinct texts, so neither side answers from a cache.
    queries = [f"{questions[i % len(questions)]} ({i})" for i in range(args.queries)]
    encoder = Encoder("minilm-l6")
    local = ShardedRetriever.load(one, encoder)
    vectors = encoder.encode_queries(queries)
    start = time.perf_counter()
    for i in range(0, len(queries), args.batch):
        local.shards[0].search(vectors[i:i + args.batch], 3)
    raw = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(queries), args.batch):
        local.search(queries[i:i + args.batch], 3)
    in_process = len(queries) / (time.perf_counter() - start)
    print(f"{args.passages} passages, Flat, {len(queries)} distinct queries, top-3")
    print(f"raw faiss search (vectors in, batches of {args.batch}):   {raw:8.1f} QPS")
    print(f"in-process retriever (text in, batches of {args.batch}):  {in_process:8.1f} QPS  (baseline)")

    for name, shards in (("1 shard", one), ("2 shards", two)):
        client = RetrievalClient.launch(shards, "minilm-l6", router_options={"num_cpus": cores},
                                        shard_options={"num_cpus": max(1, cores // len(shards))})
        asyncio.run(closed_loop(client, [f"warm-up {i}" for i in range(64)], args.clients))
        qps, latencies = asyncio.run(closed_loop(client, queries, args.clients))
        p50, p99 = statistics.median(latencies), float(np.percentile(latencies, 99))
        memory = ", ".join(f"{s['index_bytes'] / 2**20:.0f} MiB index / {s['process_rss_bytes'] / 2**20:.0f} MiB RSS"
                           for s in ray.get(client.routers[0].stats.remote()))
        print(f"service, {name}, {args.clients} clients: {qps:8.1f} QPS  p50 {p50 * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  "
              f"{qps / in_process:.2f}x in-process (target >= 0.8x); per shard: {memory}")
        client.close()


if __name__ == "__main__":
    main()
