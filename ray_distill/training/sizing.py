"""Sizing a training run with the memory model: what a worker will hold, whether it fits its GPU, and
the settings that would make it fit.

Used in three places:
- each train worker, to resolve `train.gradient_checkpointing: auto` against
  its own GPU's memory (`worker_compute`);
- the train and sweep stages, to refuse a config whose workers cannot fit
  `train.gpu_memory_gib` before any worker starts (`fit_problem`);
- `ray-distill resources`, to print the table (`memory_table`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

from ray_distill.errors import UserError
from ray_distill.training import attention, loss
from ray_distill.training.memory import (GIB, RESERVED_GIB, USABLE_FRACTION, Estimate, Shape, Workload, estimate, fits,
                                         shape_from_config, shape_of, usable_bytes)
from ray_distill.training.optim import accumulation_steps

if TYPE_CHECKING:
    from ray_distill.training.student import Compute

CHECKPOINTING = ("auto", "true", "false")


def checkpointing_mode(value) -> str:
    """`train.gradient_checkpointing` as auto, true or false (YAML's booleans arrive as True/False)."""
    mode = str(value).lower()
    if mode not in CHECKPOINTING:
        raise ValueError(f"must be auto, true or false, got {value!r}")
    return mode


def planned_paths(train) -> tuple[str, str]:
    """The attention path and loss kernel the memory model assumes for the workers before any runs: `auto`
    attention always lands on a mask-free path (attention.py), which all keep the same tensors, and the
    `auto` loss kernel is `chunked`."""
    return (train.attention if train.attention != "auto" else "segments",
            train.loss_kernel if train.loss_kernel != "auto" else "chunked")


def workload(train, *, attention: str, loss_kernel: str, checkpointing: bool, engine: str = "deepspeed") -> Workload:
    """One worker of the `train` section, as the memory model sees it."""
    modules = tuple(train.lora_targets) if list(train.lora_targets) != ["all-linear"] else Workload.lora_modules
    accumulation = accumulation_steps(train, train.workers)
    return Workload(tokens=train.micro_batch_size * train.max_length, rows=train.micro_batch_size,
                    lora_r=train.lora_r if train.lora else None, lora_modules=modules, lora_dropout=train.lora_dropout,
                    zero_stage=train.zero_stage, workers=train.workers, checkpointing=checkpointing,
                    attention=attention, loss_kernel=loss_kernel, accumulation=max(1, accumulation), engine=engine,
                    offload_optimizer=train.offload_optimizer, offload_params=train.offload_params,
                    dtype_bytes=4 if train.dtype == "float32" else 2)


def estimates(shape: Shape, train, paths: Optional[tuple[str, str]] = None,
              engine: str = "deepspeed") -> dict[bool, Estimate]:
    """The worker's estimate without and with gradient checkpointing, on `paths` (attention path, loss
    kernel; the planned ones by default)."""
    attention, kernel = paths or planned_paths(train)
    return {on: estimate(shape, workload(train, attention=attention, loss_kernel=kernel, checkpointing=on,
                                         engine=engine)) for on in (False, True)}


def resolve_checkpointing(mode: str, shape: Optional[Shape], train, gpu_gib: Optional[float],
                          paths: Optional[tuple[str, str]] = None, engine: str = "deepspeed") -> tuple[bool, str]:
    """Whether to checkpoint, and why: `auto` turns it on only where the worker would not fit its GPU
    without it; an unknown GPU memory or shape leaves it off."""
    if mode != "auto":
        return mode == "true", f"train.gradient_checkpointing={mode}"
    if gpu_gib is None:
        return False, "auto: off (no GPU memory to size against)"
    if shape is None:
        return False, "auto: off (the model's shape is unknown)"
    without = estimates(shape, train, paths, engine)[False]
    if fits(without, gpu_gib):
        return False, f"auto: off, {without.peak / GIB:.1f} GiB predicted without it fits a {gpu_gib:.0f} GiB GPU"
    return True, f"auto: on, {without.peak / GIB:.1f} GiB predicted without it exceeds a {gpu_gib:.0f} GiB GPU"


def worker_compute(train, model, device, engine: str = "deepspeed") -> tuple[Compute, list[str]]:
    """How a worker on `device` computes `model` under `engine` (attention path, loss kernel, checkpointing),
    and notes on why. `auto` checkpointing sizes the paths chosen against the smaller of the GPU's memory
    and `train.gpu_memory_gib`."""
    # local: ray_distill.config imports this module to validate a config, which the fast commands do and which
    # needs no torch; the student module imports torch, peft and transformers
    import torch

    from ray_distill.training.student import Compute, plain_output_head

    path, path_note = attention.resolve(train.attention, device.type, model.config, next(model.parameters()).dtype)
    kernel, kernel_note = loss.resolve(train.loss_kernel, device.type, plain_output_head(model),
                                       sharded_head=train.zero_stage == 3)
    gpu_gib = None
    if device.type == "cuda":
        gpu_gib = torch.cuda.get_device_properties(device).total_memory / GIB
        gpu_gib = min(gpu_gib, train.gpu_memory_gib or gpu_gib)
    checkpointing, why = resolve_checkpointing(checkpointing_mode(train.gradient_checkpointing),
                                               shape_from_config(model.config.to_dict()), train, gpu_gib,
                                               (path, kernel), engine)
    notes = [note for note in (path_note, kernel_note) if note] + [f"gradient checkpointing {why}"]
    return Compute(path, kernel, checkpointing), notes


def _variants(train) -> list[tuple[str, dict]]:
    """Settings that lower a worker's memory, as (text, changes to the train section); those that keep the
    method (full fine-tuning or LoRA) come first."""
    found = []
    if checkpointing_mode(train.gradient_checkpointing) == "false":
        found.append(("train.gradient_checkpointing=auto", {"gradient_checkpointing": "auto"}))
    if train.loss_kernel == "full":
        found.append(("train.loss_kernel=auto", {"loss_kernel": "auto"}))
    if train.attention in ("sdpa", "eager"):
        found.append(("train.attention=auto", {"attention": "auto"}))
    if train.micro_batch_size > 1:
        found.append(("train.micro_batch_size=1", {"micro_batch_size": 1}))
    if train.zero_stage < 3 and train.workers > 1:
        found.append(("train.zero_stage=3", {"zero_stage": 3}))
    if not train.offload_optimizer:
        found.append(("train.offload_optimizer=true", {"offload_optimizer": True}))
    if not train.lora:
        found.append(("train.lora=true", {"lora": True}))
    return found


def _peak(shape: Shape, train) -> float:
    """The smallest peak a worker reaches under `train` (checkpointing on where `auto` may turn it on)."""
    by_checkpointing = estimates(shape, train)
    mode = checkpointing_mode(train.gradient_checkpointing)
    return by_checkpointing[mode != "false"].peak if mode != "auto" else min(e.peak for e in by_checkpointing.values())


def fit_problem(train, student: str, gpu_gib: Optional[float], where: str = "train") -> Optional[str]:
    """Why `student` cannot train under `train` on GPUs of `gpu_gib` GiB, naming settings that would make
    it fit; None when it fits, or when the GPU memory or the student's shape is unknown."""
    if gpu_gib is None or not train.gpus_per_worker:
        return None
    shape = shape_of(student)
    if shape is None:
        return None
    peak, limit = _peak(shape, train), usable_bytes(gpu_gib)
    if peak <= limit:
        return None
    variants = _variants(train)
    fixes = [text for text, changes in variants if _peak(shape, replace(train, **changes)) <= limit]
    if not fixes:  # no one setting is enough: the first few together, in the order above
        combined, texts = train, []
        for text, changes in variants:
            combined = replace(combined, **changes)
            texts.append(text)
            if _peak(shape, combined) <= limit:
                fixes.append(" and ".join(texts))
                break
    length = _longest_fitting_length(shape, train, limit)
    if length:
        fixes.append(f"train.max_length={length}")
    needed = math.ceil((peak / GIB + RESERVED_GIB) / USABLE_FRACTION)
    fixes.append(f"GPUs of at least {needed} GiB (train.gpu_memory_gib)")
    return (f"{where}: {student} does not fit a train worker's {gpu_gib:g} GiB GPU: the memory model predicts "
            f"{peak / GIB:.1f} GiB at its peak (at most {limit / GIB:.1f} GiB fit) with train.max_length="
            f"{train.max_length}, micro_batch_size={train.micro_batch_size}, lora={train.lora}, zero_stage="
            f"{train.zero_stage} over {train.workers} workers; it would fit with " + ", or ".join(fixes))


def _longest_fitting_length(shape: Shape, train, limit: float) -> Optional[int]:
    fitting = [n for n in range(512, train.max_length, 512) if _peak(shape, replace(train, max_length=n)) <= limit]
    return fitting[-1] if fitting else None


def require_fit(train, students: list[str], where: str) -> None:
    """Refuse (UserError) when any of `students` cannot fit `train.gpu_memory_gib`."""
    problems = [p for p in (fit_problem(train, s, train.gpu_memory_gib, where) for s in dict.fromkeys(students)) if p]
    if problems:
        raise UserError("\n".join(problems))


def memory_table(train, students: list[str], where: str) -> str:
    """One train worker's predicted peak per student, without and with checkpointing, and what the config's
    `train.gradient_checkpointing` gives on `train.gpu_memory_gib`, as Markdown."""
    gpu, mode = train.gpu_memory_gib, checkpointing_mode(train.gradient_checkpointing)
    lines = [f"| {where}: student | mode | tokens per micro-batch | without checkpointing | with checkpointing "
             f"| `gradient_checkpointing: {mode}` on {f'{gpu:g} GiB' if gpu else 'its GPU'} |", "|---|---|---|---|---|---|"]
    method = f"LoRA r={train.lora_r}" if train.lora else "full"
    tokens = train.micro_batch_size * train.max_length
    for student in dict.fromkeys(students):
        shape = shape_of(student)
        if shape is None:
            lines.append(f"| {student} | {method} | {tokens} | shape unknown here | | |")
            continue
        by = estimates(shape, train)
        if gpu or mode != "auto":
            on, _ = resolve_checkpointing(mode, shape, train, gpu)
            fit = "" if gpu is None or by[on].peak <= usable_bytes(gpu) else ", does not fit: refused"
            choice = ("on" if on else "off") + fit
        else:
            choice = "decided on the worker"
        lines.append(f"| {student} | {method} | {tokens} | {by[False].describe()} | {by[True].describe()} | {choice} |")
    return "\n".join(lines) + "\n"
