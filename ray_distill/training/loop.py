"""The training loop, without Ray: packed rows in, optimizer steps out.

`train_steps` is what every Ray Train worker runs (`distributed/training.py`
only adds Ray's data shard, checkpoints and reports around it) and what
`scripts/bench/gpu_train.py` times on one GPU. It reads each epoch's rows,
draws the same seeded order on every rank, cuts global batches and keeps this
rank's micro-batches (`data_order.py`), and runs one optimizer step per
global batch on an engine: DeepSpeed's, or `engines.TorchEngine` in a plain
process. After each step it hands the step's log entry and the new data
position to `on_step`, which logs and checkpoints; `save_state` and
`load_state` write and read what a resumed run needs besides the engine's
own state.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from ray_distill.training.data_order import DataPosition, global_batches, micro_batches, shuffled
from ray_distill.training.engines import StepEngine
from ray_distill.training.optim import accumulation_steps
from ray_distill.training.packing import IGNORE_INDEX, collate
from ray_distill.training.student import empty_batch, loss_sum

CHECKPOINT_TAG = "state"  # the DeepSpeed tag inside every checkpoint directory


def all_reduce_sum(value: float, device) -> float:
    """`value` summed over the ranks (itself in a single process)."""
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return float(tensor.item())


def optimizer_step(engine: StepEngine, tensors: list[dict], device, micro_steps_everywhere: int) -> tuple[float, float]:
    """Forward and backward over this rank's micro-batches, then the engine's step; returns the mean loss
    per target token of the whole global batch, and its target count."""
    targets = all_reduce_sum(sum(int((t["labels"][:, 1:] != IGNORE_INDEX).sum()) for t in tensors), device)
    # Summed losses, scaled so that the engine's mean over micro-steps and ranks is the mean over every
    # target token of the global batch, wherever packing and accumulation put it.
    scale = micro_steps_everywhere / max(targets, 1.0)
    summed = 0.0
    for tensor in tensors:
        loss, _ = loss_sum(engine, {name: value.to(device) for name, value in tensor.items()})
        engine.backward(loss * scale)
        engine.step()  # the weights change only at the last micro-step
        summed += loss.item()
    return all_reduce_sum(summed, device) / max(targets, 1.0), targets


def train_steps(engine: StepEngine, epoch_rows: Callable[[int], Iterable[dict]], train, *, rank: int, world: int, device,
                pad_id: int, steps_per_epoch: int, position: DataPosition, step: int, stop_at: int,
                on_step: Callable[[dict, DataPosition, int], None]) -> tuple[DataPosition, int]:
    """Optimizer steps from `position` (with `step` done) until `stop_at` or the last epoch of `train`;
    returns the position and step reached. `epoch_rows(epoch)` yields every packed row in file order, the
    same on every rank; `train` gives the batch sizes, epochs, seed and shuffle buffer."""
    accumulation = accumulation_steps(train, world)
    engine.train()
    last = time.perf_counter()  # steps are timed end to end, waiting for data included
    for epoch in range(position.epoch, train.epochs):
        stream = shuffled(epoch_rows(epoch), train.seed, epoch, train.shuffle_buffer)
        for index, batch in enumerate(global_batches(stream, train.global_batch_size)):
            if step >= stop_at:
                break
            if epoch == position.epoch and index < position.step:
                continue  # trained before the checkpoint this run resumed from
            tensors = [collate(rows, pad_id) if rows else empty_batch(pad_id)
                       for rows in micro_batches(batch, rank, world, train.micro_batch_size, accumulation)]
            lr = engine.get_lr()[0]
            loss, targets = optimizer_step(engine, tensors, device, world * accumulation)
            real, padded = (all_reduce_sum(v, device) for v in (
                sum(len(row["input_ids"]) for row in batch[rank::world]), sum(t["input_ids"].numel() for t in tensors)))
            now = time.perf_counter()
            seconds, last = now - last, now
            step += 1
            position = position.advanced(steps_per_epoch)
            grad_norm = engine.get_global_grad_norm()
            on_step({"step": step, "epoch": epoch, "loss": loss, "lr": lr,
                     "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": int(real),
                     "trained_tokens": int(targets), "seconds": seconds, "tokens_per_second": real / seconds,
                     "real_token_fraction": real / max(padded, 1),
                     "keys": [key for row in batch for key in row["keys"]]}, position, step)
        if step >= stop_at:
            break
    return position, step


def save_state(engine, directory: Path, position: DataPosition, step: int, rank: int, exclude_frozen: bool) -> None:
    """A DeepSpeed checkpoint (weights, optimizer, schedule) with the data position, and this rank's
    random state, so a resumed run's dropout draws on from where it was rather than replaying."""
    engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, exclude_frozen_parameters=exclude_frozen,
                           client_state={"position": asdict(position), "step": step})
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    torch.save({"cpu": torch.get_rng_state(), "cuda": cuda}, Path(directory) / f"rng-rank{rank}.pt")


def load_state(engine, directory: Path, rank: int, strict: bool) -> tuple[DataPosition, int]:
    """Restore what `save_state` wrote; returns the data position and the steps done."""
    _, client = engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG, load_module_strict=strict)
    rng = torch.load(Path(directory) / f"rng-rank{rank}.pt")
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return DataPosition(**client["position"]), client["step"]

