"""`ray-distill serve-retrieval`: the index stage's shards as a Ray service behind the HTTP API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ray_distill.config import ExperimentConfig
from ray_distill.distributed.cluster import init_ray
from ray_distill.stages.base import StageContext
from ray_distill.stages.paths import index_dir, shard_dirs
from ray_distill.stages.services import launch_retrieval
from ray_distill.tools.retrieval.http import make_app


def serve_retrieval(config: ExperimentConfig) -> int:
    ctx = StageContext(config, Path(config.run.dir))
    directories = shard_dirs(index_dir(ctx))
    r = config.retrieval
    init_ray()
    client = launch_retrieval(ctx)
    passages = sum(s["passages"] for s in client.stats[0])
    print(f"serving {passages} passages from {len(directories)} shard(s) x {r.replicas} replica(s) "
          f"on http://{r.host}:{r.port}/retrieve", flush=True)
    try:
        web.run_app(make_app(client, default_topk=r.topk), host=r.host, port=r.port, print=None)
    finally:
        client.close()
    return 0
