"""The summed next-token cross entropy over a row's target tokens, without a row's full logits.

A row of 10,240 tokens over Qwen2.5's 151,936-entry vocabulary has 6.2 GB of
float32 logits, and their gradient as much again: more than a 1.5B student's
weights. Only target tokens (about 40% of agent data) have a loss, so every
kernel but `full` first keeps the hidden states of the positions that predict
a target, then:

- `chunked`: a PyTorch autograd function that runs over chunks of those
  positions, computing each chunk's logits in float32, its loss, and at once
  the gradients with respect to the hidden states and the output weights, so
  nothing of a chunk outlives it (the approach of Liger Kernel's fused linear
  cross entropy, in plain PyTorch). Any device.
- `liger`: Liger Kernel's fused linear cross entropy (Triton, CUDA).
- `cut_cross_entropy`: Apple's cut cross-entropy (Triton, CUDA).
- `full`: the head over every position, then cross entropy on float32 logits
  (the path of old).

`auto` is `chunked`: it is exact (equal to `full` within float32 rounding,
tested on CPU) and runs everywhere; the fused kernels are measured against it
in `scripts/bench/gpu_train.py`.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Optional

from ray_distill.training.memory import CHUNK_BYTES

KERNELS = ("chunked", "liger", "cut_cross_entropy", "full")
_PACKAGES = {"liger": "liger_kernel", "cut_cross_entropy": "cut_cross_entropy"}

# Imports in the functions below are local: ray_distill.config imports this module (KERNELS), and the fast
# commands load no torch (chunked_loss is torch too); liger-kernel and cut-cross-entropy are optional (the `gpu`
# extra), and DeepSpeed is absent on the GPU bench machine.


def unavailable(kernel: str, device_type: str) -> Optional[str]:
    """Why `kernel` cannot run on this device, or None when it can."""
    import torch

    if kernel not in KERNELS:
        return f"unknown loss kernel {kernel!r}; known: auto, {', '.join(KERNELS)}"
    if kernel in _PACKAGES:
        if not (device_type == "cuda" and torch.cuda.is_available()):
            return f"{kernel} is a Triton kernel and needs a CUDA device"
        if importlib.util.find_spec(_PACKAGES[kernel]) is None:
            return f"{kernel} needs the {_PACKAGES[kernel].replace('_', '-')} package"
    return None


def resolve(requested: str, device_type: str, plain_head: bool = True,
            sharded_head: bool = False) -> tuple[str, Optional[str]]:
    """The kernel to train with, and a note when it is not the one requested. `auto` is `chunked`; a fused
    kernel that cannot run here falls back to it; a head beyond one linear layer (`student.plain_output_head`)
    needs `full`. cut_cross_entropy recomputes from the output weight in its backward pass, when DeepSpeed
    ZeRO-3 (`sharded_head`) holds only a shard of it again."""
    if not plain_head:
        note = None if requested in ("auto", "full") else \
            f"train.loss_kernel={requested} leaves out the model's logit bias, scaling or soft-capping: full instead"
        return "full", note
    if requested == "auto":
        return "chunked", None
    reason = unavailable(requested, device_type)
    if reason is None and requested == "cut_cross_entropy" and sharded_head:
        reason = "its backward pass needs the output weights, which ZeRO-3 shards again after the forward"
    if reason is None:
        return requested, None
    return "chunked", f"train.loss_kernel={requested} cannot run here ({reason}): chunked instead"


def chunk_tokens(vocab: int) -> int:
    return max(1, CHUNK_BYTES // (4 * vocab))


def linear_cross_entropy(hidden, weight, targets, kernel: str):
    """sum_i CE(hidden[i] @ weight.T, targets[i]) over (n, H) hidden states and n targets (none ignored)."""
    with gathered(weight):
        # A micro-batch without targets (a rank whose share of a short last batch ran out) still has to reach
        # every weight with a zero gradient; the fused kernels do not take zero rows.
        if kernel == "chunked" or hidden.shape[0] == 0:
            from ray_distill.training.chunked_loss import ChunkedLinearCrossEntropy

            return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens(weight.shape[0]))
        if kernel == "liger":
            from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

            return LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, hidden, targets)
        if kernel == "cut_cross_entropy":
            from cut_cross_entropy import linear_cross_entropy as cce

            # No gradient filtering: the gradients stay those of the exact loss.
            return cce(hidden, weight, targets, reduction="sum", filter_eps=None)
    raise ValueError(f"linear_cross_entropy has no kernel {kernel!r}")


@contextlib.contextmanager
def gathered(weight):
    """The whole weight for the duration of the call where DeepSpeed ZeRO-3 holds only a shard of it here
    (a tied head is already whole: the embedding keeps it gathered). The kernels compute the weight's
    gradient inside their forward, so it may be sharded again before the backward pass."""
    if not hasattr(weight, "ds_id"):
        yield
        return
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    if weight.ds_status == ZeroParamStatus.AVAILABLE:
        yield
        return
    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        yield
