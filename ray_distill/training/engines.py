"""What runs an optimizer step for the training loop: DeepSpeed's engine, or a plain PyTorch one.

The loop (`loop.py`) calls an engine as DeepSpeed's engine is called: the
engine itself for the forward pass, `backward(loss)` per micro-batch (which
divides by the accumulation steps), `step()` after every micro-batch (which
updates only at the end of a global batch), `get_lr()` and
`get_global_grad_norm()`. `TorchEngine` gives a single process the same
interface over torch's AdamW, so the GPU bench can run the loop where
DeepSpeed is not installed.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from ray_distill.training.optim import ADAM_BETAS, ADAM_EPS, accumulation_steps, deepspeed_config, schedule


class StepEngine(Protocol):
    def __call__(self, **batch): ...

    def train(self) -> None: ...

    def backward(self, loss) -> None: ...

    def step(self) -> None: ...

    def get_lr(self) -> list[float]: ...

    def get_global_grad_norm(self) -> Optional[float]: ...


def deepspeed_engine(model, train, *, workers: int, dtype, total_steps: int):
    """DeepSpeed's engine over `model` with the `train` section's ZeRO stage, batch sizes, clipping, and
    torch's AdamW under the run's learning-rate schedule."""
    import deepspeed  # local: absent on the GPU bench machine, which trains with TorchEngine

    lr_schedule = schedule(total_steps, train.warmup_ratio, train.schedule)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(train, workers=workers, bf16=dtype == torch.bfloat16),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule))
    return engine


class TorchEngine:
    """One process's stand-in for DeepSpeed's engine: torch's AdamW (fused on CUDA) over the trainable
    parameters in their own dtype, gradient accumulation, clipping and the learning-rate schedule."""

    def __init__(self, model, train, *, total_steps: int):
        self.module = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=train.lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                           weight_decay=train.weight_decay,
                                           fused=all(p.device.type == "cuda" for p in params))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule(total_steps, train.warmup_ratio, train.schedule))
        self.params, self.max_grad_norm = params, train.max_grad_norm
        self.accumulation = accumulation_steps(train, workers=1)
        self.micro_steps, self.grad_norm = 0, None

    def __call__(self, **batch):
        return self.module(**batch)

    def train(self) -> None:
        self.module.train()

    def backward(self, loss) -> None:
        (loss / self.accumulation).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.accumulation:
            return
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        self.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_global_grad_norm(self) -> Optional[float]:
        return self.grad_norm
