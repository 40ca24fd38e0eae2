"""Embedding and indexing a corpus's shards on Ray.

Embedding is a Ray Data pipeline per shard: its passages stream from
Parquet through an actor pool of encoders (a GPU each when the cluster has
GPUs) into a memory-mapped `embeddings.npy`, so memory does not grow with the
shard. A shard's embeddings are written under a temporary name and renamed
when complete, with `embeddings.json` (embedder, dimension, count) beside
them: a rerun embeds only the shards that lack them. Index building is one
Ray task per shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import ray

from ray_distill.distributed.datasets import read_parquet
from ray_distill.fileio import write_json_atomic
from ray_distill.tools.retrieval.encoder import Encoder
from ray_distill.tools.retrieval.shards import PASSAGES_FILE, IndexKind, ShardManifest, build_index, write_shard

EMBEDDINGS = "embeddings.npy"
EMBEDDINGS_INFO = "embeddings.json"


class _EncodeBatch:
    """Ray Data UDF: passages in, unit vectors out (one encoder per actor)."""

    def __init__(self, embedder: str, batch_size: int):
        self.encoder = Encoder(embedder, batch_size=batch_size)

    def __call__(self, batch: dict) -> dict:
        return {"embedding": self.encoder.encode_passages([str(c) for c in batch["contents"]])}


def has_embeddings(directory: Path, embedder: str) -> bool:
    info = directory / EMBEDDINGS_INFO
    return info.is_file() and json.loads(info.read_text())["embedder"] == embedder and (directory / EMBEDDINGS).is_file()


def passage_count(directory: Path) -> int:
    return pq.ParquetFile(directory / PASSAGES_FILE).metadata.num_rows


def embed_shard(directory: Path, embedder: str, encoders: int = 1, batch_size: int = 256,
                encoder_cpus: float = 1, resources: Optional[dict[str, float]] = None,
                encoder_gpus: Optional[int] = None, progress: Optional[Callable[[int], None]] = None) -> int:
    """Embed one shard's passages into `embeddings.npy`; returns the passage count. An encoder
    reserves `encoder_gpus` GPUs (default: one if the cluster has GPUs now), else `encoder_cpus`
    CPUs, which Ray turns into its torch threads. `progress(n)` is called as n more passages
    arrive."""
    count = passage_count(directory)
    gpus = encoder_gpus if encoder_gpus is not None else 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    context = ray.data.DataContext.get_current()
    kept, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        # Blocks of a few thousand passages: encoders share the shard, and progress is steady.
        blocks = max(1, -(-count // (16 * batch_size)))
        dataset = read_parquet(directory / PASSAGES_FILE, resources, override_num_blocks=blocks).select_columns(
            ["contents"]).map_batches(
            # Batches of 16 model batches: the encoder sorts each by length, so little is padding.
            _EncodeBatch, fn_constructor_args=(embedder, batch_size), batch_size=16 * batch_size,
            compute=ray.data.ActorPoolStrategy(size=encoders), num_gpus=gpus, num_cpus=0 if gpus else encoder_cpus,
            resources=resources or None)
        partial = directory / (EMBEDDINGS + ".tmp")
        vectors, row = None, 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            embedded = batch["embedding"]
            if vectors is None:
                vectors = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(count, embedded.shape[1]))
            vectors[row:row + len(embedded)] = embedded
            row += len(embedded)
            if progress:
                progress(len(embedded))
    finally:
        context.execution_options.preserve_order = kept
    if row != count:
        raise RuntimeError(f"{directory}: embedded {row} of {count} passages")
    vectors.flush()
    dimension = vectors.shape[1]
    del vectors
    (directory / EMBEDDINGS_INFO).unlink(missing_ok=True)  # never old info beside new vectors
    partial.rename(directory / EMBEDDINGS)
    write_json_atomic(directory / EMBEDDINGS_INFO, {"embedder": embedder, "dimension": dimension, "count": count})
    return count


@ray.remote
def _build(directory: str, embedder: str, kind: IndexKind, shard: int) -> ShardManifest:
    vectors = np.load(Path(directory) / EMBEDDINGS, mmap_mode="r")
    return write_shard(Path(directory), build_index(vectors, kind), embedder, kind, shard)


def build_indexes(directories: Sequence[Path], embedder: str, kind: IndexKind, cpus_per_build: float = 1,
                  resources: Optional[dict[str, float]] = None) -> list[ShardManifest]:
    """Build and save every shard's index, one Ray task each."""
    return ray.get([_build.options(num_cpus=cpus_per_build, resources=resources or {}).remote(str(d), embedder, kind, n)
                    for n, d in enumerate(directories)])
