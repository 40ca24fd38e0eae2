"""Serving retrieval: `ray-distill serve-retrieval` against a single-process FastAPI + faiss server.

    .venv/bin/python scripts/bench/peer_retrieval.py [--quick]

The peer is the server Search-R1 ships (`search_r1/search/retrieval_server.py`;
the issue names FlashRAG's too, but flashrag-dev does not install here): one
process, a FastAPI app under uvicorn with one worker, a `/retrieve` endpoint
written as a plain `def` (so FastAPI runs each request on its thread pool)
that encodes the request's queries, calls `index.search` on one faiss index
and reads the hits from a `datasets` corpus row by row. Ours is `ray-distill
serve-retrieval`, started as a user starts it, with its own Ray. Both run as
subprocesses on 127.0.0.1 and speak the same API, so one load generator
(closed loop: each of N clients sends its next one-query request when its
last one is answered) drives both with the same stream of distinct queries
(world questions with a suffix, so no cache answers) at 1, 16 and 64
clients, after a warm-up at that concurrency. Target: ours serves at least
1.5x the peer's QPS at 64 clients. Each figure also gives the CPU time the
server's processes spent per query (ours by role), to show where time goes.

Fairness: both load the same one-shard Flat index (the files
`scripts/bench/retrieval.py` builds: 100k generated passages, `--quick` 20k)
and embed with the same encoder class, model and query prefix, so they do
the same work per query; a sample of queries checks that they return the
same top-3. The peer keeps torch's and faiss's defaults (every core), as
Search-R1 does; ours keeps the retrieval section's defaults (router_cpus 1,
shard_cpus 0.25: one thread embeds, one searches). Both servers are up for
the whole run and take turns at each concurrency, so the machine's drift
hits both. The load generator shares the machine, so it is aiohttp's
client: httpx's AsyncClient spends an order of magnitude more CPU per
request at 16-64 clients (encode/httpx#3215), which on 2 cores would be
taken from the servers.
"""

# No `from __future__ import annotations`: FastAPI reads the peer's request model from its endpoint's
# annotation, which postponed evaluation would turn into a name it cannot resolve inside serve_peer.
import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Optional

import aiohttp
import numpy as np
import psutil
from peers import print_result

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "ray-distill" / "bench-retrieval"
CLIENTS = (1, 16, 64)
TARGET = 1.5  # ours / peer QPS at the most clients


def serve_peer(shard: Path, port: int) -> None:
    """The peer, in its own process: Search-R1's dense retrieval server over one shard's files."""
    import datasets
    import faiss
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    from ray_distill.tools.retrieval import Encoder

    index = faiss.read_index(str(shard / "index.faiss"))
    corpus = datasets.load_dataset("parquet", data_files=str(shard / "passages.parquet"), split="train")
    encoder = Encoder("minilm-l6")  # the class ours embeds with: same model, query prefix and normalisation

    class QueryRequest(BaseModel):
        queries: list[str]
        topk: Optional[int] = None
        return_scores: bool = False

    app = FastAPI()

    @app.post("/retrieve")
    def retrieve(request: QueryRequest):  # a plain def, as Search-R1's: FastAPI runs it on its thread pool
        topk = request.topk or 3
        results, scores = [], []
        for start in range(0, len(request.queries), 512):  # Search-R1's retrieval_batch_size
            batch = request.queries[start:start + 512]
            batch_scores, rows = index.search(encoder.encode_queries(batch), k=topk)
            docs = [corpus[int(i)] for i in rows.reshape(-1)]
            results += [docs[n * topk:(n + 1) * topk] for n in range(len(batch))]
            scores += batch_scores.tolist()
        if request.return_scores:
            return {"result": [[{"document": d, "score": s} for d, s in zip(hits, row)]
                               for hits, row in zip(results, scores)]}
        return {"result": results}

    uvicorn.run(app, host="127.0.0.1", port=port)


class Server:
    """A server subprocess on a loopback port, its output in a log file; stopped with SIGINT (Ctrl-C)."""

    def __init__(self, name: str, command: list[str], port: int, log_dir: Path):
        self.name, self.port, self.log = name, port, log_dir / f"{name}.log"
        self.url = f"http://127.0.0.1:{port}/retrieve"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # ours starts its own Ray, as a user's would
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> None:
        """Both servers open their port only once the index and the encoder are loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited with status {self.proc.returncode}; "
                                   f"its log:\n{self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the {self.name} server did not listen within {timeout:.0f} s; see {self.log}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds its processes have used so far, by role: ours is a driver (the HTTP layer) and Ray's
        processes, among them the router (embeds, merges) and the shard (searches)."""
        used: dict[str, float] = {}
        root = psutil.Process(self.proc.pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                times, name = process.cpu_times(), process.name()
            except psutil.NoSuchProcess:
                continue
            role = ("HTTP" if process.pid == root.pid else "router" if name == "ray::RetrievalRouter"
                    else "shard" if name == "ray::ShardActor" else "Ray's own")
            used[role] = used.get(role, 0.0) + times.user + times.system
        return used

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(one: Path, log_dir: Path) -> Iterator[tuple[Server, Server]]:
    """The peer and ours over the same one-shard index, ready; stopped on leaving."""
    # serve-retrieval reads an index directory (a split into shards): this one holds the one shard.
    index = one.parent / "one-shard-index"
    index.mkdir(exist_ok=True)
    if not (index / "shard-00000").exists():
        (index / "shard-00000").symlink_to(one, target_is_directory=True)
    (index / "split.json").write_text('{"shards": 1}\n')
    servers = []
    try:
        port = free_port()
        servers.append(Server("peer", [sys.executable, str(Path(__file__).resolve()), "--serve-peer", str(one),
                                       "--port", str(port)], port, log_dir))
        # The retrieval section's defaults (one thread embeds, one searches), which the quickstart zeroes to
        # leave its sandboxes both cores.
        port = free_port()
        servers.append(Server("ours", [sys.executable, "-m", "ray_distill.cli", "serve-retrieval",
                                       "experiments/quickstart.yaml", f"run.dir={one.parent}",
                                       f"index.out_dir={index}", "retrieval.router_cpus=1",
                                       "retrieval.shard_cpus=0.25", f"retrieval.port={port}"], port, log_dir))
        for server in servers:
            server.wait_ready()
        yield tuple(servers)
    finally:
        for server in servers:
            server.stop()


@dataclass
class Run:
    qps: float
    latencies: list[float]
    cpu: dict[str, float]  # the server's CPU ms per query, by role
    generator_cpu: float  # the load generator's CPU ms per query
    bystander_cpu: float  # the other server's CPU seconds meanwhile, idle
    seconds: float

    def figure(self) -> str:
        p50, p99 = statistics.median(self.latencies) * 1000, float(np.percentile(self.latencies, 99)) * 1000
        return f"{self.qps:.0f} QPS, p50 {p50:.0f} ms, p99 {p99:.0f} ms, {sum(self.cpu.values()):.1f} CPU ms/query"


async def closed_loop(server: Server, bystander: Server, queries: list[str], warm_up: list[str], clients: int) -> Run:
    """`clients` callers, each sending its next one-query request when the last is answered; `queries` are
    measured after `warm_up` at the same concurrency over the same connections."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:
        async def run(stream: list[str]) -> list[float]:
            pending = iter(stream)
            latencies: list[float] = []

            async def caller():
                for query in pending:
                    start = time.perf_counter()
                    await answer(http, server.url, query)
                    latencies.append(time.perf_counter() - start)

            await asyncio.gather(*(caller() for _ in range(clients)))
            return latencies

        await run(warm_up)
        cpu, other, generator = server.cpu(), sum(bystander.cpu().values()), time.process_time()
        start = time.perf_counter()
        latencies = await run(queries)
        seconds = time.perf_counter() - start
        generator = time.process_time() - generator
        used, other = server.cpu(), sum(bystander.cpu().values()) - other
    per_query = {role: (used[role] - cpu.get(role, 0.0)) * 1000 / len(queries) for role in used}
    return Run(len(queries) / seconds, latencies, per_query, generator * 1000 / len(queries), other, seconds)


async def answer(http: aiohttp.ClientSession, url: str, query: str) -> list[dict]:
    """The top 3 of one query, as a Search-R1 client asks for them."""
    async with http.post(url, json={"queries": [query], "topk": 3, "return_scores": True}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {(await response.text())[:300]}")
        return (await response.json())["result"][0]


async def top_ids(url: str, queries: list[str]) -> list[list[str]]:
    async with aiohttp.ClientSession() as http:
        return [[hit["document"]["id"] for hit in await answer(http, url, q)] for q in queries]


def index_and_questions(passages: int) -> tuple[Path, list[str]]:
    """The one-shard index and the world's questions, built once per corpus size (scripts/bench/retrieval.py)."""
    import ray

    from ray_distill.distributed.cluster import init_ray
    from retrieval import build  # local: the peer's process needs none of the pipeline

    started = not ray.is_initialized()
    # As retrieval.py does: the index stage's encoders take every core, and its reads need more.
    init_ray(num_cpus=2 * os.cpu_count())
    _, (one,), questions = build(CACHE, passages)
    if started:  # it would idle beside the servers while they are measured
        ray.shutdown()
    return one, questions


def measure(quick: bool = False) -> dict:
    passages = 20_000 if quick else 100_000
    per_client, least, sample = (8, 60, 20) if quick else (20, 200, 100)
    one, questions = index_and_questions(passages)

    def stream(tag: str, n: int) -> list[str]:  # distinct texts, so no cache answers
        return [f"{questions[i % len(questions)]} ({tag} {i})" for i in range(n)]

    with serving(one, Path(tempfile.mkdtemp(prefix="ray-distill-peer-retrieval-"))) as (peer, ours):
        check = stream("check", sample)
        agree = sum(a == b for a, b in zip(*(asyncio.run(top_ids(server.url, check)) for server in (peer, ours))))
        runs = {}
        for clients in CLIENTS:
            queries = stream(f"{clients} clients", max(least, per_client * clients))
            warm_up = stream(f"warm-up {clients}", 4 * clients)
            # The peer first at every concurrency, then ours: both see the machine's drift over the run.
            runs[clients] = [asyncio.run(closed_loop(server, other, queries, warm_up, clients))
                             for server, other in ((peer, ours), (ours, peer))]
    rows = []
    for clients, (them, us) in runs.items():
        target = clients == CLIENTS[-1]
        rows.append({"metric": f"QPS at {clients} client{'s' if clients > 1 else ''}, {len(us.latencies)} queries "
                               "(ours / peer, >1: ours serves more)",
                     "ours": us.figure(), "peer": them.figure(), "ratio": us.qps / them.qps,
                     "target": f">= {TARGET}x the peer's QPS" if target else "",
                     "met": us.qps / them.qps >= TARGET if target else None})
    them, us = runs[CLIENTS[-1]]
    idle = sum(r[0].bystander_cpu for r in runs.values()) / sum(r[0].seconds for r in runs.values())
    return {
        "title": "Retrieval serving: `ray-distill serve-retrieval` vs a FastAPI + faiss server (Search-R1's)",
        "rows": rows,
        "notes": [
            f"{passages} generated passages, one Flat shard loaded by both, minilm-l6, top-3, one query per request, "
            f"{os.cpu_count()} CPU cores.",
            "Ours: `serve-retrieval`, retrieval.router_cpus=1 and shard_cpus=0.25 (one thread embeds, one searches); "
            "the peer: one uvicorn worker, FastAPI's thread pool, torch and faiss on every core.",
            f"Same top-3 ids from both on {agree} of {sample} queries.",
            f"Where the CPU goes at {CLIENTS[-1]} clients, ms per query: ours "
            + ", ".join(f"{role} {ms:.2f}" for role, ms in sorted(us.cpu.items()))
            + f"; the peer {sum(them.cpu.values()):.2f}; the load generator {them.generator_cpu:.2f} with the peer, "
            f"{us.generator_cpu:.2f} with ours. Ours, idle while the peer was measured, used {idle:.1%} of a core.",
        ],
        "versions": {p: version(p) for p in ("fastapi", "uvicorn", "datasets", "faiss-cpu", "ray", "aiohttp")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k passages and fewer queries")
    parser.add_argument("--serve-peer", type=Path, help=argparse.SUPPRESS)  # the peer server's own process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.port)
        return
    print_result(measure(args.quick))


if __name__ == "__main__":
    main()
