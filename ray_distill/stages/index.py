"""Stage `index`: split the corpus into shards, embed them on Ray, build their faiss indexes.

Each part resumes: the split is redone only when the corpus or shard size
changed, a shard is embedded only when it lacks embeddings from this
embedder, and an index is built only when the shard lacks one of this kind.
"""

from __future__ import annotations

import glob
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ray_distill.data.world import read_manifest
from ray_distill.distributed.cluster import require_resources
from ray_distill.distributed.indexing import build_indexes, embed_shard, has_embeddings, passage_count
from ray_distill.errors import ConfigError, DataError
from ray_distill.fileio import write_json_atomic
from ray_distill.models import resolve_embedder
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.paths import SPLIT, index_dir, shard_dirs, world_dir
from ray_distill.stages.services import index_built, index_kind, shard_indexed
from ray_distill.tools.retrieval import read_corpus, split_corpus


def _corpus_files(ctx: StageContext) -> list[str]:
    patterns = ctx.config.index.corpus
    if patterns:
        files = []
        for pattern in patterns:
            matched = sorted(glob.glob(pattern))
            if not matched:
                raise ConfigError(f"index.corpus: nothing matches {pattern!r}")
            files += matched
        return files
    manifest = read_manifest(world_dir(ctx))
    if manifest is None:
        raise ConfigError(f"index.corpus is empty and there is no world at {world_dir(ctx)}; "
                          "run the world stage or set index.corpus")
    return [str(world_dir(ctx) / f) for f in manifest["corpus"]]


def _split(ctx: StageContext, out: Path, files: list[str]) -> dict:
    stats = [Path(f).stat() for f in files]
    wanted = {"corpus": [[f, s.st_size, s.st_mtime_ns] for f, s in zip(files, stats)],
              "passages_per_shard": ctx.config.index.passages_per_shard}
    split = out / SPLIT
    if split.is_file():
        done = json.loads(split.read_text())
        if {k: done[k] for k in wanted} == wanted:
            return done
    for old in out.glob("shard-*"):  # another corpus or shard size: its shards are stale
        shutil.rmtree(old)
    split.unlink(missing_ok=True)
    read = [0]
    with tqdm(desc="split corpus", unit=" passages", disable=not ctx.progress, file=ctx.console) as bar:
        def seen(count: int) -> None:
            read[0] += count
            bar.update(count)

        try:
            directories = split_corpus(read_corpus(files), out, ctx.config.index.passages_per_shard, seen)
        except ValueError:  # the corpus has no passages (a malformed one is a DataError naming the record)
            others = f" or the {len(files) - 1} other corpus file(s)" if len(files) > 1 else ""
            raise DataError(f"{files[0]}{others}: no passages to index") from None
    done = {**wanted, "shards": len(directories), "passages": read[0]}
    write_json_atomic(split, done)
    return done


def _run(ctx: StageContext) -> dict[str, Any]:
    out = index_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    embedder = resolve_embedder(ctx.config.models.embedder).name
    kind = index_kind(ctx)
    timings = {}
    start = time.perf_counter()
    split = _split(ctx, out, _corpus_files(ctx))
    directories = shard_dirs(out)
    timings["split_seconds"] = round(time.perf_counter() - start, 1)

    require_resources({}, {"index.resources": ctx.config.index.resources})
    start = time.perf_counter()
    missing = [d for d in directories if not has_embeddings(d, embedder)]
    with tqdm(total=sum(passage_count(d) for d in missing), desc=f"embed {len(missing)} shard(s)", unit=" passages",
              disable=not ctx.progress or not missing, file=ctx.console) as bar:
        for directory in missing:
            embed_shard(directory, embedder, ctx.config.index.encoders, ctx.config.index.batch_size,
                        ctx.config.index.encoder_cpus, ctx.config.index.resources, ctx.config.index.encoder_gpus,
                        progress=bar.update)
    timings["embed_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    todo = [d for d in directories if not shard_indexed(d, embedder, kind)]
    try:
        build_indexes(todo, embedder, kind, resources=ctx.config.index.resources)
    except Exception as e:  # faiss settings that do not fit the data surface from the build tasks
        cause = getattr(e, "cause", e)
        if isinstance(cause, ValueError):
            raise ConfigError(f"index: {cause}") from None
        raise
    timings["build_seconds"] = round(time.perf_counter() - start, 1)
    return {"out_dir": str(out), "shards": len(directories), "passages": split["passages"], "embedder": embedder,
            "kind": kind.factory(), "embedded_shards": len(missing), "built_shards": len(todo), **timings}


def _headline(summary: dict[str, Any]) -> str:
    return (f"{summary['passages']} passages in {summary['shards']} shard(s), {summary['kind']} over "
            f"{summary['embedder']}; embedded {summary['embedded_shards']}, indexed {summary['built_shards']}")


STAGE = Stage(
    name="index",
    inputs=("index", "models"),
    run=_run,
    is_complete=index_built,
    outputs=lambda ctx: [index_dir(ctx)],
    headline=_headline,
)
