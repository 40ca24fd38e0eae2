"""What one train worker holds on its GPU at its peak: a memory model, to know before launch.

The peak of a training step comes at one of two moments:
- the loss: every saved activation is still held (or, with gradient
  checkpointing, each layer's input), and the loss adds its logits or chunks;
- the backward pass of a layer: with checkpointing, that layer's recomputed
  activations and the gradients flowing through it come on top.

Beneath both lie the weights, the LoRA adapters, the gradients and the
optimizer states, sharded over the workers as the ZeRO stage says.

Activations are counted tensor by tensor from what a transformers decoder
layer saves for its backward pass (counted with saved-tensor hooks): with LoRA
the frozen base layers keep no input, each adapter keeps its dropout mask and
output, the RMSNorms keep a float32 copy of their input, the MLP keeps three
intermediate tensors, and attention keeps queries, keys, values and output.
The dense block-diagonal mask of the `sdpa` path adds a row of S entries per
token in every layer (and key/value heads expanded to the query heads); the
mask-free paths add nothing. The loss of the `full` kernel and the backward
workspace of a layer are constants fitted to the peaks measured on an H200
(issue 16: Qwen2.5 0.5B-7B shapes, 10,240-token rows, a plain PyTorch loop
with float32 adapters), which the model then matches within 5%
(tests/test_memory_model.py). The DeepSpeed terms (bf16 adapters, float32
master weights and moments, reduce buckets) follow DeepSpeed's code and are
not yet checked against a GPU: `scripts/bench/gpu_train.py` prints both.

Pure Python (no torch): the train and sweep stages check a config on the
driver, and `ray-distill resources` prints the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ray_distill.errors import DataError, brief
from ray_distill.fileio import parse_json
from ray_distill.models.resolve import EMBEDDED_MODELS, resolve_model

GIB = 2**30
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Bytes per token and vocabulary entry of the `full` loss at the start of the backward pass: the bf16
# logits, the float32 log-probabilities and their gradients (fitted to the measured peaks).
FULL_LOSS_BYTES = 11.5
# The gradients that flow through one layer's backward pass, in MLP intermediates (fitted).
LAYER_BACKWARD_INTERMEDIATES = 3
# What the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation take beyond the
# model's tensors: a GPU of G GiB holds a peak of at most USABLE_FRACTION * G - RESERVED_GIB.
USABLE_FRACTION = 0.95
RESERVED_GIB = 1.0
# Float32 logits of one chunk of the chunked loss (loss.py); its softmax gradient reuses them in place.
CHUNK_BYTES = 256 * 2**20
# DeepSpeed's default reduce bucket (elements): ZeRO-2/3 reduce gradients through a buffer of this size.
REDUCE_BUCKET = 500_000_000


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's dimensions (Llama / Qwen2 family)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int = 0  # 0: hidden // heads
    qkv_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each layer's linear modules: (in, out) features."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        return sum(a * b for a, b in self.linears().values()) + bias + 2 * self.hidden

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * self.layer_params + self.hidden

    def lora_params(self, r: int, modules: tuple[str, ...] = LORA_MODULES) -> int:
        return self.layers * sum(r * (a + b) for name, (a, b) in self.linears().items() if name in modules)


def _qwen25(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, tied: bool,
            vocab: int = 151936) -> Shape:
    return Shape(hidden, intermediate, layers, heads, kv_heads, vocab, tied, qkv_bias=True)


# The Qwen2.5 students of the paper (their config.json), so a config is checked without downloading them.
QWEN25 = {
    "0.5b": _qwen25(896, 4864, 24, 14, 2, tied=True),
    "1.5b": _qwen25(1536, 8960, 28, 12, 2, tied=True),
    "3b": _qwen25(2048, 11008, 36, 16, 2, tied=True),
    "7b": _qwen25(3584, 18944, 28, 28, 4, tied=False, vocab=152064),
}
_QWEN25_NAME = re.compile(r"qwen2\.5-(0\.5b|1\.5b|3b|7b)(-instruct)?$", re.I)


_SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def shape_from_config(config: dict, where: str = "config.json") -> Shape:
    """A Shape from a transformers config.json; a size it lacks, or one that is not a positive integer, is a
    DataError naming `where` and the key (the file comes from the user's model directory)."""
    if not isinstance(config, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key in (*_SHAPE_KEYS, "num_key_value_heads", "head_dim"):
        value = config.get(key)
        if (key in _SHAPE_KEYS or value is not None) and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise DataError(f"{where}: {key!r} must be a positive integer, got {brief(value)}")
    return Shape(hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                 layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                 kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                 vocab=config["vocab_size"], tied=bool(config.get("tie_word_embeddings", False)),
                 head_dim=config.get("head_dim") or 0,
                 qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")))


def shape_of(model: str) -> Optional[Shape]:
    """The shape of a student named as the config names it: a Qwen2.5 hub id (known without a download),
    an embedded model, a local directory, or a hub id in the local HF cache; None when unknown here."""
    known = _QWEN25_NAME.search(model.rstrip("/").rsplit("/", 1)[-1])
    if known:
        return QWEN25[known.group(1).lower()]
    config_file = _local_config(model)
    return shape_from_config(parse_json(config_file.read_bytes(), config_file), str(config_file)) if config_file else None


def _local_config(model: str) -> Optional[Path]:
    if model in EMBEDDED_MODELS or Path(model).expanduser().is_dir():
        path = resolve_model(model)
        return path / "config.json" if (path / "config.json").is_file() else None
    try:
        # local: ray_distill.config imports this module, and huggingface_hub's download code costs ~0.3 s
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a hub id
        return None
    return Path(cached) if isinstance(cached, str) else None


@dataclass(frozen=True)
class Workload:
    """What one train worker runs, as far as its memory goes."""

    tokens: int  # per micro-batch: micro_batch_size x max_length
    rows: int  # micro-batch size (sequences)
    lora_r: Optional[int]  # None: full fine-tuning
    lora_modules: tuple[str, ...] = LORA_MODULES
    lora_dropout: float = 0.05
    zero_stage: int = 2
    workers: int = 1
    checkpointing: bool = False
    attention: str = "segments"  # an attention path (attention.py)
    loss_kernel: str = "chunked"
    accumulation: int = 1  # micro-batches per optimizer step
    # deepspeed: bf16 weights and adapters, float32 master weights and Adam moments, sharded by ZeRO;
    # torch: a plain loop (peft keeps adapters in float32; the optimizer's moments in the parameters' dtype).
    engine: str = "deepspeed"
    offload_optimizer: bool = False
    offload_params: bool = False
    dtype_bytes: int = 2
    target_fraction: float = 0.4  # share of tokens that are targets (agent trajectories: about 40%)


@dataclass(frozen=True)
class Estimate:
    """A worker's GPU memory, in bytes, by term."""

    weights: float
    adapters: float
    gradients: float
    optimizer: float
    activations: float  # held from the forward pass into the backward pass
    loss: float  # on top, while the loss and its gradient are computed
    layer_backward: float  # on top, while a layer's backward pass runs
    gradients_at_loss: bool = True  # False: gradients are freed at each step and made after the loss

    @property
    def at_loss(self) -> float:
        gradients = self.gradients if self.gradients_at_loss else 0.0
        return self.weights + self.adapters + gradients + self.optimizer + self.activations + self.loss

    @property
    def in_backward(self) -> float:
        return self.weights + self.adapters + self.gradients + self.optimizer + self.activations + self.layer_backward

    @property
    def peak(self) -> float:
        return max(self.at_loss, self.in_backward)

    def describe(self) -> str:
        """The peak and its terms, e.g. `21.1 GiB (weights 14.5, ..., layer backward 3.8)`."""
        at_loss = self.at_loss >= self.in_backward
        gradients = self.gradients if self.gradients_at_loss or not at_loss else 0.0
        last = ("loss", self.loss) if at_loss else ("layer backward", self.layer_backward)
        parts = [("weights", self.weights + self.adapters), ("gradients", gradients), ("optimizer", self.optimizer),
                 ("activations", self.activations), last]
        return f"{self.peak / GIB:.1f} GiB (" + ", ".join(f"{n} {v / GIB:.1f}" for n, v in parts if v) + ")"


def _layer_activations(s: Shape, w: Workload) -> float:
    """Bytes one layer saves for its backward pass, per token."""
    p, h, i = w.dtype_bytes, s.hidden, s.intermediate
    full = w.lora_r is None
    row = w.tokens / w.rows
    dense = w.attention in ("sdpa", "eager")
    kv = s.q_dim if dense else s.kv_dim  # the dense-mask path expands key/value heads to the query heads
    saved = 2 * 4 * h  # each RMSNorm keeps a float32 copy of its input
    saved += p * (s.q_dim + 2 * kv + s.q_dim) + 4 * s.heads  # queries, keys, values, output, log-sum-exp
    saved += 3 * p * i  # MLP: gate output, its activation, up output
    if dense:
        saved += p * row  # this token's row of the layer's own copy of the block mask
    if w.attention == "eager":
        saved += 2 * p * s.heads * row  # attention probabilities, before and after dropout
    if full:  # trainable base layers keep their inputs, and the norms their outputs
        saved += 2 * p * h + p * h + p * s.q_dim + p * h + p * i
        return saved
    adapter = 4 if w.engine == "torch" else p  # peft keeps adapters in float32 unless DeepSpeed casts them
    linears = {name: dims for name, dims in s.linears().items() if name in w.lora_modules}
    saved += sum(adapter * w.lora_r for _ in linears)  # each adapter's A output
    if w.lora_dropout > 0:  # each adapter's dropout output and mask
        saved += sum((adapter + 1) * fan_in for fan_in, _ in linears.values())
    elif adapter != p:  # each adapter's cast of its input
        saved += sum(adapter * fan_in for fan_in, _ in linears.values())
    else:  # the adapters read the frozen layers' inputs, which are then saved once per input
        inputs = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "o", "gate_proj": "mlp",
                  "up_proj": "mlp", "down_proj": "down"}
        saved += sum(dict((inputs[name], p * fan_in) for name, (fan_in, _) in linears.items()).values())
    return saved


def estimate(s: Shape, w: Workload) -> Estimate:
    p, n, shards = w.dtype_bytes, w.tokens, max(1, w.workers)
    full = w.lora_r is None
    trainable = s.params if full else s.lora_params(w.lora_r, w.lora_modules)
    weights = s.params * p
    if w.zero_stage == 3:  # a shard, plus the layers (and the head) gathered around the one computing
        weights = 0 if w.offload_params else weights / shards
        weights += min(s.params, 2 * s.layer_params + s.vocab * s.hidden) * p
    adapters = 0 if full else trainable * (4 if w.engine == "torch" else p)
    if w.engine == "torch":
        grad_bytes = p if full else 4
        gradients = trainable * grad_bytes
        optimizer = 2 * trainable * grad_bytes
    else:  # DeepSpeed: low-precision gradients through a reduce bucket, float32 gradients of this rank's shard
        bucket = trainable if w.zero_stage == 1 else min(trainable, REDUCE_BUCKET)
        gradients = bucket * p + 4 * trainable / shards
        optimizer = 0 if w.offload_optimizer else 12 * trainable / shards  # float32 master, Adam's two moments
    per_layer = _layer_activations(s, w) * n
    if w.checkpointing:
        activations = s.layers * n * p * s.hidden  # each layer's input
        layer_backward = per_layer + LAYER_BACKWARD_INTERMEDIATES * p * s.intermediate * n
    else:
        activations = s.layers * per_layer
        layer_backward = LAYER_BACKWARD_INTERMEDIATES * p * s.intermediate * n
    if w.loss_kernel == "full":
        loss = FULL_LOSS_BYTES * n * s.vocab
    else:
        targets = w.target_fraction * n
        # Kept hidden states and their gradient, a chunk's logits twice; full fine-tuning adds the output
        # weights' float32 gradient sum, a chunk's product and the final cast.
        loss = 2 * p * s.hidden * targets + 2 * CHUNK_BYTES + (s.vocab * s.hidden * (4 + 2 * p) if full else 0)
    # A plain loop frees gradients at every step: the first micro-batch's loss comes before any exist.
    at_loss = not (w.engine == "torch" and w.accumulation == 1)
    return Estimate(weights, adapters, gradients, optimizer, activations, loss, layer_backward, at_loss)


def usable_bytes(gpu_gib: float) -> float:
    """The largest peak a GPU of `gpu_gib` GiB holds."""
    return (USABLE_FRACTION * gpu_gib - RESERVED_GIB) * GIB


def fits(e: Estimate, gpu_gib: float) -> bool:
    return e.peak <= usable_bytes(gpu_gib)
