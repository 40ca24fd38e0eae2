"""The retrieval service on Ray: an actor per index shard, routers that batch queries, a client.

A router embeds a batch of queries once, asks every shard for its top-k at
the same time and merges the answers. Queries from concurrent callers share
a batch, and recent (query, k) answers come from an LRU cache. A shard actor
that dies is restarted and the search in flight is retried on it (searching
is idempotent); a shard that cannot come back fails the search with an
error naming it, never a partial answer. Replicas of the whole service
(a router and its own shards) add throughput; `RetrievalClient` spreads
calls over them and is a `Retriever`, so `web_search` runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import psutil
import ray

from ray_distill.batching import MicroBatcher
from ray_distill.compute import run_compute
from ray_distill.distributed.cluster import OWN_PLACEMENT
from ray_distill.failpoints import kill_point
from ray_distill.tools.retrieval.encoder import Encoder
from ray_distill.tools.retrieval.index import Hit
from ray_distill.tools.retrieval.shards import INDEX_FILE, IndexKind, Shard, merge_top_k

SHARD_RESTARTS = 3


@ray.remote(max_restarts=SHARD_RESTARTS, max_task_retries=SHARD_RESTARTS)
class ShardActor:
    def __init__(self, directory: str, embedder: str, search: Optional[IndexKind] = None):
        self.directory = Path(directory)
        self.shard = Shard.load(directory, embedder, search=search)
        if ray.get_gpu_ids():  # placed with num_gpus: search there
            self.shard.to_gpu()

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, list[list[Optional[tuple[str, str]]]]]:
        """Scores (queries x k') and the (id, contents) of each hit (None past the shard's size)."""
        kill_point("retrieval.search")
        scores, rows = self.shard.search(vectors, k)
        shard = self.shard
        return scores, [[(shard.ids[i], shard.contents[i]) if i >= 0 else None for i in row] for row in rows]

    def stats(self) -> dict:
        return {"passages": self.shard.manifest.passages, "kind": self.shard.manifest.kind.kind,
                "index_bytes": (self.directory / INDEX_FILE).stat().st_size,
                "process_rss_bytes": psutil.Process().memory_info().rss}


@ray.remote
class RetrievalRouter:
    def __init__(self, shard_dirs: Sequence[str], embedder: str, cache_size: int = 10_000, max_batch: int = 256,
                 shard_options: Optional[dict] = None, search: Optional[IndexKind] = None):
        if not shard_dirs:
            raise ValueError("the retrieval service needs at least one index shard")
        self.encoder = Encoder(embedder)
        self.shard_dirs = [str(d) for d in shard_dirs]
        self.shards = [ShardActor.options(**(shard_options or {})).remote(d, self.encoder.spec.name, search)
                       for d in self.shard_dirs]
        self.cache: "OrderedDict[tuple[str, int], list[tuple[str, str, float]]]" = OrderedDict()
        self.cache_size = cache_size
        self._batcher = MicroBatcher(self._answer, max_batch, weight=lambda item: len(item[0]))

    @property
    def batches(self) -> int:
        return self._batcher.batches

    async def stats(self) -> list[dict]:
        """Per shard: passages, index kind and index size; also waits until every shard is loaded."""
        return await asyncio.gather(*(self._call(i, self.shards[i].stats.remote()) for i in range(len(self.shards))))

    def shard_actors(self) -> list:
        return list(self.shards)

    async def search(self, queries: list[str], k: int) -> list[list[tuple[str, str, float]]]:
        """Per query, the top-k (id, contents, score), best first."""
        results = [self._cached(q, k) for q in queries]
        missing = [q for q, r in zip(queries, results) if r is None]
        if missing:
            found = iter(await self._batcher.submit((missing, k)))
            results = [r if r is not None else next(found) for r in results]
        return results

    def _cached(self, query: str, k: int):
        hit = self.cache.get((query, k))
        if hit is not None:
            self.cache.move_to_end((query, k))
        return hit

    async def _answer(self, batch: list[tuple[list[str], int]]) -> list[list[list[tuple[str, str, float]]]]:
        answers = await self._search_all(list(dict.fromkeys(q for queries, _ in batch for q in queries)),
                                         max(k for _, k in batch))
        results = []
        for queries, k in batch:
            results.append([answers[q][:k] for q in queries])
            for q, hits in zip(queries, results[-1]):
                self.cache[(q, k)] = hits
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
        return results

    async def _search_all(self, queries: list[str], k: int) -> dict[str, list[tuple[str, str, float]]]:
        vectors = await run_compute(self.encoder.encode_queries, queries)
        parts = await asyncio.gather(*(self._call(i, shard.search.remote(vectors, k)) for i, shard in enumerate(self.shards)))
        # Merge by each hit's position in its shard's list, which is where its document is.
        positions = [(scores, np.where([[d is not None for d in row] for row in docs], np.arange(scores.shape[1]), -1))
                     for scores, docs in parts]
        scores, shards, rows = merge_top_k(positions, k)
        return {q: [(*parts[s][1][n][r], float(score)) for score, s, r in zip(scores[n], shards[n], rows[n]) if r >= 0]
                for n, q in enumerate(queries)}

    async def _call(self, shard: int, ref):
        try:
            return await ref
        except ray.exceptions.RayActorError as e:
            raise RuntimeError(f"retrieval shard {shard} ({self.shard_dirs[shard]}) is unavailable after "
                               f"{SHARD_RESTARTS} restarts: {e}") from e


class RetrievalClient:
    """A `Retriever` backed by the service's routers (calls go round-robin)."""

    def __init__(self, routers: list):
        if not routers:
            raise ValueError("a retrieval client needs at least one router")
        self.routers = routers
        self._turn = itertools.cycle(range(len(routers)))
        # Concurrent callers in this process share calls, two in flight per router.
        self._batcher = MicroBatcher(self._send, max_batch=256, weight=lambda item: len(item[0]),
                                     in_flight=2 * len(routers))

    @classmethod
    def launch(cls, shard_dirs: Sequence[str | Path], embedder: str, replicas: int = 1, *,
               router_options: Optional[dict] = None, **router_kwargs) -> "RetrievalClient":
        """Start `replicas` copies of the service (each a router with its own shard actors) and wait until loaded."""
        routers = [RetrievalRouter.options(**OWN_PLACEMENT, **(router_options or {})).remote(
                       [str(d) for d in shard_dirs], embedder, **router_kwargs)
                   for _ in range(replicas)]
        client = cls(routers)
        client.stats = ray.get([r.stats.remote() for r in routers])
        return client

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        return _hits(ray.get(self.routers[next(self._turn)].search.remote(list(queries), k)))

    async def asearch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        return _hits(await self._batcher.submit((list(queries), k)))

    async def _send(self, batch: list[tuple[list[str], int]]) -> list[list[list[tuple[str, str, float]]]]:
        unique = list(dict.fromkeys(q for queries, _ in batch for q in queries))
        answers = dict(zip(unique, await self.routers[next(self._turn)].search.remote(unique, max(k for _, k in batch))))
        return [[answers[q][:k] for q in queries] for queries, k in batch]

    def close(self) -> None:
        for router in self.routers:
            ray.kill(router)


def _hits(answers: list[list[tuple[str, str, float]]]) -> list[list[Hit]]:
    return [[Hit(i, contents, score) for i, contents, score in hits] for hits in answers]
