"""Typed schemas of an experiment config.

Every section is a dataclass; OmegaConf merges YAML files and `key=value`
overrides onto them, which rejects unknown keys and wrong types. Range checks
that types cannot express live in each section's `problems()`, which yields
`(field, message)` pairs; the loader prefixes them with the section path so an
error always names the full key. The `help` metadata of every field feeds the
generated config reference (docs/CONFIG.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

from ray_distill.tools.retrieval.shards import KINDS as INDEX_KINDS

Problems = Iterator[tuple[str, str]]


def _help(text: str, default=None, *, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _at_least(section, minimum: int, *names: str) -> Problems:
    for name in names:
        if getattr(section, name) < minimum:
            yield name, f"must be >= {minimum}, got {getattr(section, name)}"


@dataclass
class RunConfig:
    """Where a run writes and which stages it runs."""

    name: str = _help("Name of the run, used in the default run directory.", "quickstart")
    dir: str = _help(
        "Run directory (a local path): resolved config, stage manifest and every stage output.",
        "runs/${run.name}",
    )
    stages: list[str] = _help(
        "Stages `ray-distill run` executes, in order. See `ray-distill --help`.",
        factory=lambda: ["world"],
    )

    def problems(self) -> Problems:
        if not self.name.strip():
            yield "name", "must not be empty"
        if not self.dir.strip():
            yield "dir", "must not be empty"
        if len(set(self.stages)) != len(self.stages):
            yield "stages", f"lists a stage twice: {self.stages}"


@dataclass
class ModelsConfig:
    """Model names, resolved by `ray_distill.models` (embedded name, HF id or local path)."""

    teacher: str = _help("Teacher LLM.", "smollm2-135m-instruct")
    student: str = _help("Student LLM to distill into.", "smollm2-135m-instruct")
    embedder: str = _help("Sentence embedder of the retrieval index.", "minilm-l6")

    def problems(self) -> Problems:
        for key in ("teacher", "student", "embedder"):
            if not getattr(self, key).strip():
                yield key, "must name a model"


@dataclass
class WorldConfig:
    """The generated world: fictional corpus plus questions with known answers."""

    seed: int = _help("Seed of the world; the same seed gives byte-identical files.", 0)
    num_passages: int = _help("Passages in the corpus (one to several per entity).", 5000)
    num_fact_questions: int = _help("Multi-hop fact questions (2-3 hops and comparisons).", 200)
    num_math_questions: int = _help("Arithmetic word problems.", 200)
    test_fraction: float = _help("Share of each question set held out as the test split.", 0.25)
    shard_size: int = _help("Passages per corpus shard file (corpus/part-NNNNN.jsonl).", 1_000_000)
    out_dir: Optional[str] = _help("Where to write the world; default `<run.dir>/world`.", None)

    def problems(self) -> Problems:
        if self.num_passages < 100:
            yield "num_passages", f"must be at least 100, got {self.num_passages}"
        yield from _at_least(self, 0, "num_fact_questions", "num_math_questions")
        if not 0.0 <= self.test_fraction < 1.0:
            yield "test_fraction", f"must be in [0, 1), got {self.test_fraction}"
        yield from _at_least(self, 1, "shard_size")


@dataclass
class BenchmarksConfig:
    """Where the paper's benchmark files live (see `ray-distill benchmarks`)."""

    data_dir: Optional[str] = _help(
        "Folder holding the benchmark files; default $RAY_DISTILL_BENCHMARKS, else ./data/benchmarks.",
        None,
    )
    files: dict[str, str] = _help(
        "Per-benchmark file name overrides inside data_dir, e.g. {hotpotqa: my_hotpot.jsonl}.",
        factory=dict,
    )


@dataclass
class IndexConfig:
    """The retrieval index: the corpus split into shards, embedded, and indexed with faiss."""

    corpus: list[str] = _help(
        "Corpus files ({id, contents} as JSONL, JSONL.gz or Parquet; globs allowed). Empty: the world corpus.",
        factory=list,
    )
    passages_per_shard: int = _help("Passages per shard; each is one actor when served.", 1_000_000)
    kind: str = _help("faiss index: flat (exact), ivf_flat, ivf_pq or hnsw.", "flat")
    nlist: int = _help("IVF cells (ivf_flat, ivf_pq); at most the passages of a shard.", 1024)
    nprobe: int = _help("IVF cells searched per query.", 32)
    pq_m: int = _help("IVF-PQ sub-quantizers; must divide the embedding dimension.", 64)
    pq_bits: int = _help("IVF-PQ bits per sub-quantizer code.", 8)
    hnsw_m: int = _help("HNSW neighbours per node.", 32)
    ef_search: int = _help("HNSW candidates per query.", 128)
    encoders: int = _help("Encoder actors embedding at once (one GPU each when the cluster has GPUs).", 1)
    encoder_cpus: float = _help("CPUs each encoder reserves without a GPU; it embeds with that many threads.", 1.0)
    batch_size: int = _help("Passages per encoder forward pass (each gets 16 such batches, sorted by length).", 64)
    out_dir: Optional[str] = _help("Where to write the shards; default `<run.dir>/index`.", None)

    def problems(self) -> Problems:
        if self.kind not in INDEX_KINDS:
            yield "kind", f"must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}"
        yield from _at_least(self, 1, "passages_per_shard", "nlist", "nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_search",
                             "encoders", "batch_size")
        yield from _at_least(self, 0, "encoder_cpus")


@dataclass
class RetrievalConfig:
    """Where the agent's web_search looks, and the retrieval service (`ray-distill serve-retrieval`)."""

    url: Optional[str] = _help(
        "A Search-R1-compatible endpoint for the agent's web_search, e.g. http://host:8000/retrieve. "
        "Default: the index stage's shards in this process if built, else the world corpus indexed in memory.",
        None,
    )

    host: str = _help("Address the HTTP API listens on (loopback by default; 0.0.0.0 exposes it).", "127.0.0.1")
    port: int = _help("Port of the HTTP API.", 8000)
    replicas: int = _help("Copies of the whole service (a router with its own shard actors).", 1)
    topk: int = _help("Passages per query when a request gives no topk.", 3)
    cache_size: int = _help("Recent (query, topk) answers kept per router.", 10_000)
    router_cpus: float = _help("CPUs each router reserves; it embeds queries with that many threads.", 1.0)
    shard_cpus: float = _help("CPUs each shard actor reserves; faiss searches with that many threads (at least 1).", 0.25)
    shard_gpus: float = _help("GPUs each shard actor reserves; above 0 its index is searched on the GPU (faiss-gpu).", 0.0)

    def problems(self) -> Problems:
        yield from _at_least(self, 1, "replicas", "topk", "cache_size")
        yield from _at_least(self, 0, "router_cpus", "shard_cpus", "shard_gpus")
        if not 0 < self.port < 65536:
            yield "port", f"must be a TCP port, got {self.port}"


@dataclass
class ExperimentConfig:
    """A whole experiment: one YAML file in experiments/."""

    run: RunConfig = field(default_factory=RunConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
