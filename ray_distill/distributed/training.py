"""Student SFT on Ray Train: the Ray glue around `training.loop`, one DeepSpeed engine per worker,
data streamed by Ray Data.

`fit_student` builds a `TorchTrainer` over `train_worker`. Each worker reads
the whole packed-sequence Parquet in file order and runs the Ray-free loop
(`training/loop.py`), which draws the same seeded per-epoch order as every
other worker and trains on its rank's share of each global batch
(`training/data_order.py`). A checkpoint holds the DeepSpeed state (weights,
optimizer, schedule) and the data position; Ray Train keeps the latest ones
in the run's storage, restarts failed workers from them, and a later
`fit_student` on the same storage resumes from the newest, so a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import ray
import ray.train
import torch
from ray.data import ExecutionOptions
from ray.train.torch import TorchConfig, TorchTrainer, get_device
from transformers import AutoTokenizer

from ray_distill.config.schema import TrainConfig
from ray_distill.distributed.cluster import OWN_PLACEMENT
from ray_distill.distributed.datasets import read_parquet
from ray_distill.failpoints import kill_point
from ray_distill.fileio import write_json_atomic
from ray_distill.training.data_order import DataPosition, steps_per_epoch
from ray_distill.training.engines import deepspeed_engine
from ray_distill.training.loop import load_state, save_state, train_steps
from ray_distill.training.sizing import worker_compute
from ray_distill.training.step_log import StepLog
from ray_distill.training.student import load_student, pad_id, prepare, training_dtype

COMPUTE_FILE = "compute.json"  # in the log dir: how the workers compute a step, and why


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs besides the `train` config section."""

    model_dir: str  # the student's base weights (HF directory)
    data_dir: str  # holds sequences.parquet
    storage_dir: str  # Ray Train's checkpoints
    log_dir: str  # steps.jsonl, TensorBoard and compute.json
    num_sequences: int
    torch_extensions_dir: Optional[str] = None  # cache of DeepSpeed's compiled ops (offload's CPU Adam)


def train_worker(config: dict) -> None:
    """Ray Train's side of a worker: its rank, device and data shard, checkpoints in and out, and reports;
    the steps themselves are `training.loop.train_steps`."""
    job = TrainJob(**config["job"])
    if job.torch_extensions_dir:  # read when DeepSpeed compiles an op (torch.utils.cpp_extension), not at import
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", job.torch_extensions_dir)
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
    compute, notes = worker_compute(train, model, device)
    prepare(model, compute)
    if rank == 0:  # the stage's summary reports it (a worker's log lines stay in the worker)
        Path(job.log_dir).mkdir(parents=True, exist_ok=True)
        placed = {"backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                  "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}
        write_json_atomic(Path(job.log_dir) / COMPUTE_FILE, {"compute": compute.describe(), "notes": notes, **placed})
    per_epoch = steps_per_epoch(job.num_sequences, train.global_batch_size)
    total_steps = per_epoch * train.epochs
    engine = deepspeed_engine(model, train, workers=world, dtype=dtype, total_steps=total_steps)

    position, step = DataPosition(), 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            position, step = load_state(engine, Path(directory), rank, strict=not train.lora)
    steps_log = StepLog(Path(job.log_dir), step) if rank == 0 else None
    stop_at = min(total_steps, step + (train.stop_after_steps or total_steps))

    def on_step(entry: dict, position: DataPosition, step: int) -> None:
        if steps_log is not None:  # also the stage's progress bar, which the driver draws from it
            steps_log.write(entry)
        kill_point("train.step")
        if step % train.checkpoint_every == 0 or step == stop_at:
            metrics = {name: value for name, value in entry.items() if name != "keys"} | {"total_steps": total_steps}
            with tempfile.TemporaryDirectory() as directory:
                save_state(engine, Path(directory), position, step, rank, exclude_frozen=train.lora)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    shard = ray.train.get_dataset_shard("train")
    train_steps(engine, lambda epoch: shard.iter_rows(), train, rank=rank, world=world, device=device, pad_id=pad,
                steps_per_epoch=per_epoch, position=position, step=step, stop_at=stop_at, on_step=on_step)
    if steps_log is not None:
        steps_log.close()


def backend_for(gpus_per_worker: float, cuda: bool) -> str:
    """The workers' process-group backend. NCCL needs CUDA on the node, not only GPUs in Ray's books: a
    node's GPUs can be logical (a fake cluster, a test's `num_gpus`), and then the workers, scheduled as
    GPU workers, compute on CPU over gloo."""
    return "nccl" if gpus_per_worker > 0 and cuda else "gloo"


@ray.remote(num_cpus=0)
def _cuda_available() -> bool:
    return torch.cuda.is_available()


def fit_student(train, job: TrainJob) -> dict[str, Any]:
    """Train (or resume) on Ray Train; returns the final checkpoint's path and metrics."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the stage shows its own bar
    dataset = read_parquet(Path(job.data_dir) / "sequences.parquet", train.resources).materialize()
    on_gpu = train.gpus_per_worker > 0
    # Asked where a worker would run (it waits for the same scale-up the workers need).
    cuda = on_gpu and ray.get(_cuda_available.options(num_gpus=train.gpus_per_worker, resources=train.resources,
                                                      **OWN_PLACEMENT).remote())
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
        torch_config=TorchConfig(backend=backend_for(train.gpus_per_worker, cuda)),
    )
    result = trainer.fit()
    return {"checkpoint": result.checkpoint.path if result.checkpoint else None, "metrics": dict(result.metrics or {})}
