"""Which retriever the agent's `web_search` uses, from the config: a configured endpoint,
else the index stage's shards loaded in this process, else the world corpus indexed in memory."""

from __future__ import annotations

import sys
from pathlib import Path

from ray_distill.config import ExperimentConfig
from ray_distill.stages.base import StageContext


def open_retriever(config: ExperimentConfig):
    from ray_distill.stages.index import index_built, index_dir, index_kind, shard_dirs
    from ray_distill.tools.retrieval import Encoder, FaissRetriever, ShardedRetriever
    from ray_distill.tools.retrieval.http import HttpRetriever

    if config.retrieval.url:
        return HttpRetriever(config.retrieval.url)
    ctx = StageContext(config, Path(config.run.dir))
    if index_built(ctx):
        return ShardedRetriever.load(shard_dirs(index_dir(ctx)), Encoder(config.models.embedder), index_kind(ctx))
    from ray_distill.stages.pipeline import run_pipeline
    from ray_distill.stages.world import world_dir

    run_pipeline(config, ["world"], progress=True)  # a no-op when the world exists
    print(f"indexing the world corpus with {config.models.embedder} ...", file=sys.stderr)
    return FaissRetriever.from_corpus(sorted((world_dir(ctx) / "corpus").glob("part-*.jsonl")),
                                      Encoder(config.models.embedder))
