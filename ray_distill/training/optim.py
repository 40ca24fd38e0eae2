"""The optimizer side of a training run: the learning-rate schedule and the DeepSpeed config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to the peak, then cosine or linear decay to 0 (or constant) at `total` steps.
    A picklable callable, so the LambdaLR built on it saves its state in checkpoints."""

    total: int
    warmup: int
    kind: str = "cosine"

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress


def schedule(total_steps: int, warmup_ratio: float, kind: str) -> Schedule:
    return Schedule(total_steps, math.ceil(warmup_ratio * total_steps), kind)


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def accumulation_steps(train, workers: int) -> int:
    """Micro-batches each worker runs per optimizer step."""
    return train.global_batch_size // (workers * train.micro_batch_size)


def deepspeed_config(train, *, workers: int, bf16: bool) -> dict[str, Any]:
    """A DeepSpeed config from the `train` section. On CPU (and without offload) the optimizer is
    torch's AdamW: DeepSpeed's fused and CPU Adam are compiled ops, built only when offloading needs them."""
    accumulation = accumulation_steps(train, workers)
    offload = train.offload_optimizer or train.offload_params
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "optimizer": {"type": "AdamW", "params": {"lr": train.lr, "betas": list(ADAM_BETAS), "eps": ADAM_EPS,
                                                  "weight_decay": train.weight_decay, "torch_adam": not offload}},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
