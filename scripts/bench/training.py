"""Student training: the Ray Train + DeepSpeed path vs a plain single-process PyTorch loop.

    .venv/bin/python scripts/bench/training.py [--model smollm2-135m-instruct] [--steps 8]

Both train the same model (LoRA as in the paper, or --full) on the same packed
sequences, in the same order, with the same micro-batches, loss and optimizer
settings, on all of this machine's cores:
- plain: the trainer's own loop (`training/loop.py`) in this process, on
  torch's AdamW, with gradient accumulation (what a single-GPU SFT script does);
- ray: the `train` stage's trainer, one Ray Train worker running DeepSpeed ZeRO.
Each step is timed end to end, waiting for data included; tokens/s is the
median over the steps after the first (warm-up). This machine's speed drifts
by 10-20% between runs of minutes, so the plain loop runs before and after the
Ray run and its steps are pooled (and so does the dense-mask run below). Also prints the real-token fraction of
micro-batches of 4 with and without packing, at the default max_length
(target >= 95% packed), and the plain loop's speed with the attention `auto`
picks here against the dense block mask of old (`train.attention=sdpa`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
from pathlib import Path

from ray_distill.agent import prompts
from ray_distill.config.schema import TrainConfig
from ray_distill.models import resolve_model
from ray_distill.training.data_order import global_batches, micro_batches, shuffled

WORDS = ("the city river council founded north market bridge population century station museum harbour "
         "railway district festival mountain valley school library castle").split()


def trajectories(n: int, seed: int = 0) -> list[dict]:
    """Teacher-like conversations of 1-4 steps; an observation is 3 retrieved passages of up to
    100 words (web_search's top 3) or a short printout."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": prompts.TEACHER_SYSTEM_PROMPT},
                    {"role": "user", "content": prompts.task_message(" ".join(rng.choices(WORDS, k=16)) + "?")}]
        for _ in range(rng.randint(1, 4)):
            thought = " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
            messages.append({"role": "assistant", "content": f"Thought: {thought}\nCode:\n```py\n"
                             f"print(web_search('{' '.join(rng.choices(WORDS, k=4))}'))\n```<end_code>"})
            logs = "\n".join(f"Doc {d} (Title: {rng.choice(WORDS)}) score=0.{rng.randint(50, 90)}\n"
                              + " ".join(rng.choices(WORDS, k=rng.randint(40, 100))) for d in (1, 2, 3))
            messages.append({"role": "tool", "content": "Observation:\nExecution logs:\n"
                             + (logs if rng.random() < 0.7 else " ".join(rng.choices(WORDS, k=8)))})
        rows.append({"dataset": "bench", "example_id": str(i), "sample": 0, "messages": messages, "keep": True})
    return rows


def real_token_fraction(rows: list[dict], train: TrainConfig) -> float:
    """Non-padding share of the micro-batch tensors the trainer builds from these sequences (one epoch)."""
    real = padded = 0
    accumulation = train.global_batch_size // train.micro_batch_size
    for batch in global_batches(shuffled(rows, train.seed, 0, train.shuffle_buffer), train.global_batch_size):
        for micro in micro_batches(batch, 0, 1, train.micro_batch_size, accumulation):
            if micro:
                real += sum(len(r["input_ids"]) for r in micro)
                padded += len(micro) * max(len(r["input_ids"]) for r in micro)
    return real / padded


def plain_loop(model_dir: Path, rows: list[dict], train: TrainConfig, steps: int) -> list[tuple[int, float]]:
    """(tokens, seconds) per optimizer step of the trainer's loop in this process, on torch's AdamW."""
    import torch
    from transformers import AutoTokenizer

    from ray_distill.training.data_order import DataPosition, steps_per_epoch
    from ray_distill.training.engines import TorchEngine
    from ray_distill.training.loop import train_steps
    from ray_distill.training.sizing import worker_compute
    from ray_distill.training.student import load_student, pad_id, prepare

    cpu = torch.device("cpu")
    model = load_student(model_dir, train, torch.float32)
    prepare(model, worker_compute(train, model, cpu, engine="torch")[0])
    engine = TorchEngine(model, train, total_steps=steps)
    timings = []
    train_steps(engine, lambda epoch: rows, train, rank=0, world=1, device=cpu,
                pad_id=pad_id(AutoTokenizer.from_pretrained(model_dir)),
                steps_per_epoch=steps_per_epoch(len(rows), train.global_batch_size), position=DataPosition(), step=0,
                stop_at=steps, on_step=lambda entry, *_: timings.append((entry["tokens"], entry["seconds"])))
    return timings


def ray_path(model_dir: Path, data_dir: Path, rows: list[dict], train: TrainConfig, steps: int,
             out: Path) -> list[tuple[int, float]]:
    from ray_distill.distributed.cluster import init_ray
    from ray_distill.distributed.training import TrainJob, fit_student

    init_ray()
    fit_student(train, TrainJob(str(model_dir), str(data_dir), str(out / "ray"), str(out / "logs"), len(rows)))
    log = [json.loads(line) for line in (out / "logs" / "steps.jsonl").read_text().splitlines()]
    return [(entry["tokens"], entry["seconds"]) for entry in log[:steps]]


def rate(*runs: list[tuple[int, float]]) -> float:
    """Median tokens/s over the steps of `runs`, each run's first (warm-up) step left out."""
    import statistics

    return statistics.median(tokens / seconds for timings in runs for tokens, seconds in timings[1:])


def main() -> None:
    import os

    import pyarrow.parquet as pq

    from ray_distill.training.sft_data import build_sft

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=96, help="of the timed runs")
    parser.add_argument("--packing-examples", type=int, default=1000,
                        help="of the real-token fraction (the paper keeps about 2,000 trajectories)")
    parser.add_argument("--max-length", type=int, default=1024, help="of the timed runs")
    parser.add_argument("--global-batch", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    model_dir = resolve_model(args.model)
    out = Path(tempfile.mkdtemp(prefix="ray-distill-bench-train-"))
    train = TrainConfig(max_length=args.max_length, global_batch_size=args.global_batch,
                        micro_batch_size=args.micro_batch, epochs=1, zero_stage=args.zero_stage, lora=not args.full,
                        cpus_per_worker=cores, stop_after_steps=args.steps, checkpoint_every=10**6)
    summaries = {}
    for packing in (False, True):
        variant = TrainConfig(packing=packing, micro_batch_size=4, global_batch_size=4)  # default max_length
        summaries[packing] = build_sft(trajectories(args.packing_examples, seed=1), "agent", model_dir, variant,
                                       out / f"sft-{packing}")
        rows = pq.read_table(out / f"sft-{packing}" / "sequences.parquet").to_pylist()
        summaries[packing]["real_fraction"] = real_token_fraction(rows, variant)
    timed = build_sft(trajectories(args.examples), "agent", model_dir, train, out / "sft")
    rows = pq.read_table(out / "sft" / "sequences.parquet").to_pylist()
    print(f"{args.model}, {'full' if args.full else 'LoRA r=64'}, {len(rows)} packed sequences of <= {args.max_length} "
          f"tokens ({timed['tokens']} tokens of {timed['examples']} examples), global batch "
          f"{args.global_batch}, micro-batch {args.micro_batch}, {args.steps} steps, {cores} cores")

    masked = dataclasses.replace(train, attention="sdpa")
    before, dense_before = plain_loop(model_dir, rows, train, args.steps), plain_loop(model_dir, rows, masked, args.steps)
    distributed = rate(ray_path(model_dir, out / "sft", rows, train, args.steps, out))
    after, dense_after = plain_loop(model_dir, rows, train, args.steps), plain_loop(model_dir, rows, masked, args.steps)
    plain, dense = rate(before, after), rate(dense_before, dense_after)
    print(f"plain PyTorch loop:           {plain:8.1f} tokens/s (before: {rate(before):.1f}, after: {rate(after):.1f})")
    print(f"Ray Train + DeepSpeed ZeRO-{args.zero_stage}: {distributed:8.1f} tokens/s")
    print(f"ratio: {distributed / plain:.2f}x (target >= 0.9x)")
    print(f"plain loop, attention one SDPA call per example (auto here) / a dense block mask (sdpa, the old path): "
          f"{plain / dense:.2f}x ({dense:.1f} tokens/s with the mask)")
    for packing in (False, True):
        s = summaries[packing]
        print(f"max_length {TrainConfig.max_length}, micro-batches of 4, {'packed  ' if packing else 'unpacked'}: "
              f"{s['sequences']:4d} sequences, real-token fraction {s['real_fraction']:.1%}"
              + (" (target >= 95%)" if packing else ""))


if __name__ == "__main__":
    main()
