"""Student SFT on Ray Train: one DeepSpeed engine per worker, data streamed by Ray Data.

`fit_student` builds a `TorchTrainer` over `train_worker`. Each worker reads
the whole packed-sequence Parquet in file order, draws the same seeded
per-epoch order as every other worker, and trains on its rank's share of
each global batch (`training/data_order.py`). A checkpoint holds the
DeepSpeed state (weights, optimizer, schedule) and the data position; Ray
Train keeps the latest ones in the run's storage, restarts failed workers
from them, and a later `fit_student` on the same storage resumes from the
newest, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

CHECKPOINT_TAG = "state"  # the DeepSpeed tag inside every Ray Train checkpoint


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs besides the `train` config section."""

    model_dir: str  # the student's base weights (HF directory)
    data_dir: str  # holds sequences.parquet
    storage_dir: str  # Ray Train's checkpoints
    log_dir: str  # steps.jsonl and TensorBoard
    num_sequences: int
    torch_extensions_dir: Optional[str] = None  # cache of DeepSpeed's compiled ops (offload's CPU Adam)


def _all_reduce_sum(value: float, device) -> float:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return float(tensor.item())


class StepLog:
    """Rank 0's record of every optimizer step: steps.jsonl (with the example keys each step
    trained on) and TensorBoard scalars. On resume, entries past the checkpoint (written before
    a crash) are dropped, so each step appears once."""

    def __init__(self, log_dir: Path, resumed_step: int):
        from torch.utils.tensorboard import SummaryWriter

        from ray_distill.fileio import read_jsonl

        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / "steps.jsonl"
        kept = [entry for entry in read_jsonl(self.path) if entry["step"] <= resumed_step]
        tmp = self.path.with_name("steps.jsonl.tmp")
        tmp.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
        os.replace(tmp, self.path)
        self.writer = SummaryWriter(str(log_dir / "tensorboard"), purge_step=resumed_step + 1)

    def write(self, entry: dict) -> None:
        from ray_distill.fileio import append_jsonl

        append_jsonl(self.path, entry)
        for name in ("loss", "lr", "grad_norm", "tokens_per_second", "real_token_fraction"):
            if entry.get(name) is not None:
                self.writer.add_scalar(f"train/{name}", entry[name], entry["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _optimizer_step(engine, tensors: list[dict], device, micro_steps_everywhere: int) -> tuple[float, float]:
    """Forward and backward over this rank's micro-batches, then DeepSpeed's step; returns the mean
    loss per target token of the whole global batch, and its target count."""
    from ray_distill.training.packing import IGNORE_INDEX
    from ray_distill.training.student import loss_sum

    targets = _all_reduce_sum(sum(int((t["labels"][:, 1:] != IGNORE_INDEX).sum()) for t in tensors), device)
    # Summed losses, scaled so that DeepSpeed's mean over micro-steps and ranks is the mean over
    # every target token of the global batch, wherever packing and accumulation put it.
    scale = micro_steps_everywhere / max(targets, 1.0)
    summed = 0.0
    for tensor in tensors:
        loss, _ = loss_sum(engine, {name: value.to(device) for name, value in tensor.items()})
        engine.backward(loss * scale)
        engine.step()  # DeepSpeed updates the weights only at the last micro-step
        summed += loss.item()
    return _all_reduce_sum(summed, device) / max(targets, 1.0), targets


def train_worker(config: dict) -> None:
    """The loop every Ray Train worker runs."""
    import ray.train

    job = TrainJob(**config["job"])
    if job.torch_extensions_dir:
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", job.torch_extensions_dir)
    import deepspeed
    import torch
    from ray.train.torch import get_device
    from transformers import AutoTokenizer

    from ray_distill.config.schema import TrainConfig
    from ray_distill.training.data_order import (DataPosition, global_batches, micro_batches, shuffled,
                                                 steps_per_epoch)
    from ray_distill.training.optim import deepspeed_config, schedule
    from ray_distill.training.packing import collate
    from ray_distill.training.student import empty_batch, load_student, pad_id, training_dtype

    train = TrainConfig(**config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    on_gpu = torch.cuda.is_available()
    device = get_device() if on_gpu else torch.device("cpu")
    if not on_gpu:
        torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    dtype = training_dtype(train.dtype, on_gpu)

    pad = pad_id(AutoTokenizer.from_pretrained(job.model_dir))
    model = load_student(Path(job.model_dir), train, dtype)
    per_epoch = steps_per_epoch(job.num_sequences, train.global_batch_size)
    total_steps = per_epoch * train.epochs
    lr_schedule = schedule(total_steps, train.warmup_ratio, train.schedule)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(train, workers=world, bf16=dtype == torch.bfloat16),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule))
    accumulation = train.global_batch_size // (world * train.micro_batch_size)

    position, step = DataPosition(), 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            _, client = engine.load_checkpoint(directory, tag=CHECKPOINT_TAG, load_module_strict=not train.lora)
            # Each rank's dropout draws on from where it was, rather than replaying from the start.
            rng = torch.load(Path(directory) / f"rng-rank{rank}.pt")
        position, step = DataPosition(**client["position"]), client["step"]
        torch.set_rng_state(rng["cpu"])
        if on_gpu:
            torch.cuda.set_rng_state(rng["cuda"])
    log = StepLog(Path(job.log_dir), step) if rank == 0 else None
    stop_at = min(total_steps, step + (train.stop_after_steps or total_steps))
    progress = _progress(total_steps, step) if rank == 0 else None

    def save(metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as directory:
            engine.save_checkpoint(directory, tag=CHECKPOINT_TAG, exclude_frozen_parameters=train.lora,
                                   client_state={"position": asdict(position), "step": step})
            torch.save({"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if on_gpu else None},
                       Path(directory) / f"rng-rank{rank}.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    shard = ray.train.get_dataset_shard("train")
    engine.train()
    last = time.perf_counter()  # steps are timed end to end, waiting for data included
    for epoch in range(position.epoch, train.epochs):
        stream = shuffled(shard.iter_rows(), train.seed, epoch, train.shuffle_buffer)
        for index, batch in enumerate(global_batches(stream, train.global_batch_size)):
            if step >= stop_at:
                break
            if epoch == position.epoch and index < position.step:
                continue  # trained before the checkpoint this run resumed from
            tensors = [collate(rows, pad) if rows else empty_batch(pad)
                       for rows in micro_batches(batch, rank, world, train.micro_batch_size, accumulation)]
            lr = engine.get_lr()[0]
            loss, targets = _optimizer_step(engine, tensors, device, world * accumulation)
            real, padded = (_all_reduce_sum(v, device) for v in (
                sum(len(row["input_ids"]) for row in batch[rank::world]), sum(t["input_ids"].numel() for t in tensors)))
            now = time.perf_counter()
            seconds, last = now - last, now
            step += 1
            position = position.advanced(per_epoch)
            grad_norm = engine.get_global_grad_norm()
            entry = {"step": step, "epoch": epoch, "loss": loss, "lr": lr,
                     "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": int(real),
                     "trained_tokens": int(targets), "seconds": seconds, "tokens_per_second": real / seconds,
                     "real_token_fraction": real / max(padded, 1),
                     "keys": [key for row in batch for key in row["keys"]]}
            if log is not None:
                log.write(entry)
                progress.update(1)
            if step % train.checkpoint_every == 0 or step == stop_at:
                save({name: value for name, value in entry.items() if name != "keys"} | {"total_steps": total_steps})
        if step >= stop_at:
            break
    if log is not None:
        progress.close()
        log.close()


def _progress(total: int, done: int):
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=total, desc="train steps")
    bar.update(done)
    return bar


def fit_student(train, job: TrainJob) -> dict[str, Any]:
    """Train (or resume) on Ray Train; returns the final checkpoint's path and metrics."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.data.DataContext.get_current().enable_progress_bars = False  # the trainer shows its own bar
    dataset = ray.data.read_parquet(str(Path(job.data_dir) / "sequences.parquet")).materialize()
    on_gpu = train.gpus_per_worker > 0
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train": asdict(train), "job": asdict(job)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.workers, use_gpu=on_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": train.gpus_per_worker} if on_gpu else {}),
                                  **train.resources}),
        run_config=ray.train.RunConfig(
            name="train", storage_path=str(Path(job.storage_dir).resolve()),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=2)),
        datasets={"train": dataset},
        # Every worker reads every sequence, in file order: the per-epoch order is then drawn
        # identically on each rank and each one takes its share (see data_order.py).
        dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                            execution_options=ExecutionOptions(preserve_order=True)),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
    )
    result = trainer.fit()
    return {"checkpoint": result.checkpoint.path if result.checkpoint else None, "metrics": dict(result.metrics or {})}
