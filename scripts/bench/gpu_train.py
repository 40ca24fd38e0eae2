"""Student training on one GPU: the old path beside the new, at the paper's length, and the memory model
against the measured peaks.

    python3 scripts/bench/gpu_train.py --out DIR/gpu_train   # a CUDA machine (sized for < 8 min on an H200)
    .venv/bin/python scripts/bench/gpu_train.py --dry # tiny shapes on CPU: every case and check runs

No Ray: each case runs the trainer's own loop (`training/loop.py`) through
DeepSpeed at world size 1 when it imports (ZeRO-2, torch's AdamW, as the
train stage runs it), otherwise through the plain `TorchEngine`, on a
random-initialised Qwen2.5 shape (0.5B-7B: hidden size, layers, heads, KV
heads, vocabulary) built on the device; timing does not depend on weights.
Every step trains one row of 10,240 tokens packed from examples of
0.9k-5k tokens (about 40% targets). Each case runs in its own process, so
one case's memory or failure leaves the others untouched.

Cases: 1.5B LoRA and full fine-tuning on the old path (SDPA with a dense
block mask, float32 logits of every position, no checkpointing) and on the
settings `auto` picks for this GPU; the same tokens as one causal row; 7B
LoRA as `auto` sizes it for a 40 GiB GPU (the cluster's A100s); 0.5B and 3B
LoRA; every other attention path and loss kernel that runs here. The dry run
adds the 7B shape's full fine-tuning under ZeRO-2 and ZeRO-3, whose losses
must agree step for step (ZeRO-3 gathers the untied head for the loss). For each:
tokens/s (median over the steps after warm-up), model TFLOP/s (4N FLOPs per
token for LoRA, 6N for full fine-tuning, N counting every parameter), peak
GiB (`torch.cuda.max_memory_allocated`) and the memory model's prediction.

Checks: on every attention path that runs here, a packed row's loss equals
the sum of its examples' losses computed one by one; each fused loss kernel
gives the chunked kernel's loss and gradients (bf16 tolerance).

On a GPU machine without a package index (or without Ray, vLLM, DeepSpeed
and OmegaConf), install the wheels `scripts/bench/gpu_wheels.sh` gathers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

from ray_distill.training.memory import GIB, QWEN25, Shape

MAX_LENGTH = 10240
DRY_SHAPES = {  # Qwen2.5-like proportions, small enough for a CPU
    "0.5b": Shape(64, 352, 2, 4, 2, 512, tied=True, qkv_bias=True),
    "1.5b": Shape(96, 512, 2, 6, 2, 512, tied=True, qkv_bias=True),
    "3b": Shape(128, 704, 2, 8, 2, 512, tied=True, qkv_bias=True),
    "7b": Shape(128, 704, 3, 8, 4, 640, tied=False, qkv_bias=True),
}
DRY_MAX_LENGTH = 512


@dataclass(frozen=True)
class Case:
    name: str
    student: str  # a key of QWEN25
    lora: bool = True
    attention: str = "auto"
    loss_kernel: str = "auto"
    checkpointing: str = "auto"
    gpu_memory_gib: Optional[float] = None  # what `auto` sizes for (None: this GPU)
    causal_row: bool = False  # the packed row's tokens as one sequence (no example boundaries)
    zero_stage: int = 2


OLD = {"attention": "sdpa", "loss_kernel": "full", "checkpointing": "false"}


def cases(device_type: str) -> list[Case]:
    from ray_distill.training import attention, loss

    # The targets first: a GPU lease that runs out still returns them.
    found = [Case("1.5B LoRA, old path", "1.5b", **OLD), Case("1.5B LoRA, auto", "1.5b"),
             Case("1.5B LoRA, auto, one causal row", "1.5b", causal_row=True), Case("1.5B full, auto", "1.5b", lora=False),
             Case("7B LoRA, auto for 40 GiB", "7b", gpu_memory_gib=40.0),
             Case("1.5B full, old path", "1.5b", lora=False, **OLD), Case("0.5B LoRA, auto", "0.5b"),
             Case("3B LoRA, auto", "3b")]
    auto_path, _ = attention.resolve("auto", device_type)
    found += [Case(f"1.5B LoRA, attention {p}", "1.5b", attention=p) for p in attention.PATHS
              if p != auto_path and p not in ("sdpa", "eager") and attention.unavailable(p, device_type) is None]
    found += [Case(f"1.5B LoRA, loss {k}", "1.5b", loss_kernel=k) for k in ("liger", "cut_cross_entropy")
              if loss.unavailable(k, device_type) is None]
    if device_type != "cuda":  # ZeRO-3 gathers an untied head for the loss; ZeRO-2 must train the same steps
        found += [Case("7B full, ZeRO-2", "7b", lora=False), Case("7B full, ZeRO-3", "7b", lora=False, zero_stage=3)]
    return found


def train_config(case: Case, dry: bool, steps: int):
    from ray_distill.config.schema import TrainConfig

    # The dry run's learning rate moves the tiny weights enough for its steps' losses to tell engines apart.
    return TrainConfig(max_length=DRY_MAX_LENGTH if dry else MAX_LENGTH, global_batch_size=1, micro_batch_size=1,
                       epochs=1, lr=1e-2 if dry else 1e-5, warmup_ratio=0.0, lora=case.lora, zero_stage=case.zero_stage,
                       gradient_checkpointing=case.checkpointing, attention=case.attention,
                       loss_kernel=case.loss_kernel, gpu_memory_gib=case.gpu_memory_gib,
                       dtype="float32" if dry else "bfloat16", shuffle_buffer=steps)


def build_model(shape: Shape, dtype, device):
    """A random-initialised Qwen2 causal LM of `shape`, created on `device`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                         tie_word_embeddings=shape.tied, max_position_embeddings=32768)
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2ForCausalLM._from_config(config, dtype=dtype)


def rows(shape: Shape, max_length: int, count: int, causal: bool, seed: int = 0) -> list[dict]:
    """`count` packed rows of examples of 9-50% of `max_length` tokens, each alternating untrained spans
    (prompt, observations) and trained ones (actions), about 40% targets."""
    import random

    from ray_distill.training.examples import SFTExample
    from ray_distill.training.packing import pack

    rng = random.Random(seed)
    examples = []
    for n in range(count * 8):
        length = rng.randint(int(0.09 * max_length), max_length // 2)
        trained = []
        while len(trained) < length:
            span = rng.randint(max_length // 100, max_length // 20)
            trained += [rng.random() < 0.4] * span
        ids = [rng.randrange(10, shape.vocab) for _ in range(length)]
        examples.append(SFTExample(f"bench/{n}", ids, trained[:length]))
    packed = sorted(pack(examples, max_length), key=lambda s: -len(s.input_ids))[:count]
    out = [{"index": i, **s.to_row()} for i, s in enumerate(packed)]
    if causal:
        for row in out:
            row["position_ids"] = list(range(len(row["input_ids"])))
    return out


def _deepspeed_world_of_one(device_type: str) -> bool:
    """DeepSpeed set up for one process, when it is installed (a broken install is an error, not a fallback)."""
    import importlib.util
    import socket

    if importlib.util.find_spec("deepspeed") is None:
        return False
    import deepspeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", verbose=False)
    return True


def run_case(case: Case, dry: bool, steps: int, warmup: int) -> dict:
    import torch

    from ray_distill.training.data_order import DataPosition
    from ray_distill.training.engines import TorchEngine, deepspeed_engine
    from ray_distill.training.loop import train_steps
    from ray_distill.training.memory import estimate
    from ray_distill.training.sizing import workload, worker_compute
    from ray_distill.training.student import for_training, prepare

    device = torch.device("cpu" if dry else "cuda")
    shape = (DRY_SHAPES if dry else QWEN25)[case.student]
    train = train_config(case, dry, steps)
    dtype = getattr(torch, train.dtype)
    # The dry run trains one row again and again: its losses fall, so they show whether every weight learns.
    data = rows(shape, train.max_length, 1, case.causal_row) * steps if dry else \
        rows(shape, train.max_length, steps, case.causal_row)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = for_training(build_model(shape, dtype, device), train)
    with_deepspeed = _deepspeed_world_of_one(device.type)
    kind = "deepspeed" if with_deepspeed else "torch"
    compute, notes = worker_compute(train, model, device, kind)
    prepare(model, compute)
    engine = (deepspeed_engine(model, train, workers=1, dtype=dtype, total_steps=steps) if with_deepspeed
              else TorchEngine(model, train, total_steps=steps))
    entries = []
    train_steps(engine, lambda epoch: data, train, rank=0, world=1, device=device, pad_id=0, steps_per_epoch=steps,
                position=DataPosition(), step=0, stop_at=steps, on_step=lambda entry, *_: entries.append(entry))
    rate = statistics.median(e["tokens"] / e["seconds"] for e in entries[warmup:])
    flops = (4 if case.lora else 6) * shape.params * rate
    predicted = estimate(shape, workload(train, attention=compute.attention, loss_kernel=compute.loss_kernel,
                                         checkpointing=compute.checkpointing, engine=kind))
    return {"case": asdict(case), "compute": compute.describe(), "notes": notes,
            "engine": "DeepSpeed ZeRO-%d" % train.zero_stage if with_deepspeed else "torch",
            "tokens_per_second": rate, "tflops": flops / 1e12, "losses": [e["loss"] for e in entries],
            "peak_gib": torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None,
            "predicted_gib": predicted.peak / GIB, "fill": sum(len(r["input_ids"]) for r in data) / len(data)}


def run_checks(dry: bool) -> list[dict]:
    """Attention paths (packed loss = sum of the examples' losses) and fused kernels (= chunked)."""
    import torch

    from ray_distill.training import attention, loss
    from ray_distill.training.examples import SFTExample
    from ray_distill.training.packing import collate, one_per_sequence, pack
    from ray_distill.training.student import Compute, loss_sum, prepare

    device = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    shape = replace((DRY_SHAPES if dry else QWEN25)["0.5b"], layers=2)
    results = []
    torch.manual_seed(0)
    examples = [SFTExample(f"e{i}", torch.randint(10, shape.vocab, (n,)).tolist(), [j % 3 > 0 for j in range(n)])
                for i, n in enumerate((300, 170, 90, 250))]
    packed = collate([s.to_row() for s in pack(examples, 1024)], pad_id=0)
    alone = [collate([s.to_row()], pad_id=0) for s in one_per_sequence(examples)]
    for path in attention.PATHS:
        if attention.unavailable(path, device.type):
            continue
        model = build_model(shape, dtype, device)
        prepare(model, Compute(path, "chunked", checkpointing=False))
        to = lambda batch: {k: v.to(device) for k, v in batch.items()}  # noqa: E731
        with torch.no_grad():
            whole = float(loss_sum(model, to(packed))[0])
            parts = sum(float(loss_sum(model, to(b))[0]) for b in alone)
        results.append({"check": f"attention {path}: packed loss / sum of the examples' losses",
                        "value": whole / parts, "ok": abs(whole / parts - 1) < (1e-4 if dry else 1e-2)})
    n, vocab, hidden = (64, shape.vocab, shape.hidden) if dry else (4096, 151936, 1536)
    h = torch.randn(n, hidden, device=device, dtype=dtype)
    w = (torch.randn(vocab, hidden, device=device, dtype=dtype) * hidden ** -0.5)
    t = torch.randint(0, vocab, (n,), device=device)
    reference = _loss_and_grads(h, w, t, "chunked")
    for kernel in ("full",) + tuple(k for k in ("liger", "cut_cross_entropy") if loss.unavailable(k, device.type) is None):
        got = _loss_and_grads(h, w, t, kernel)
        error = max(float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(got, reference))
        results.append({"check": f"loss {kernel}: loss and gradients against chunked (largest relative error)",
                        "value": error, "ok": error < (1e-5 if dry else 2e-2)})
    return results


def _loss_and_grads(hidden, weight, targets, kernel: str):
    import torch.nn.functional as F

    from ray_distill.training.loss import linear_cross_entropy

    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    if kernel == "full":
        value = F.cross_entropy((h @ w.T).float(), targets, reduction="sum")
    else:
        value = linear_cross_entropy(h, w, targets, kernel)
    value.backward()
    return value.detach().float().reshape(1), h.grad.float(), w.grad.float()


def in_child(args: list[str], timeout: float) -> dict:
    """Run this script with `args` in a fresh process; its last stdout line is its JSON result."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "seconds": time.perf_counter() - started}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}", "seconds": time.perf_counter() - started}
    return {**json.loads(lines[-1]), "seconds": time.perf_counter() - started}


def _here(run) -> dict:
    """`run()` in this process, timed, with a failure recorded like a child's."""
    started = time.perf_counter()
    try:
        result = run()
    except Exception as e:  # a failed case is reported in the table, and the bench exits non-zero
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return {**result, "seconds": time.perf_counter() - started}


def report(results: list[dict], checks: list[dict]) -> list[str]:
    """The table, the checks and the issue's targets, as lines."""
    lines = ["| case | computed as | engine | tokens/s | model TFLOP/s | peak GiB | predicted GiB | predicted/peak |",
             "|---|---|---|---|---|---|---|---|"]
    by_name = {r["case"]["name"]: r for r in results if "case" in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:200]} | | | | | | |")
            continue
        peak = r["peak_gib"]
        ratio = f"{r['predicted_gib'] / peak:.2f}" if peak else "-"
        lines.append(f"| {r['case']['name']} | {r['compute']} | {r['engine']} | {r['tokens_per_second']:,.0f} "
                     f"| {r['tflops']:.3g} | {'-' if peak is None else f'{peak:.1f}'} | {r['predicted_gib']:.1f} "
                     f"| {ratio} |")
    lines += ["", "| check | value | ok |", "|---|---|---|"]
    lines += [f"| {c['check']} | {c['value']:.6g} | {'yes' if c['ok'] else 'NO'} |" for c in checks]
    old, new = by_name.get("1.5B LoRA, old path"), by_name.get("1.5B LoRA, auto")
    causal, full = by_name.get("1.5B LoRA, auto, one causal row"), by_name.get("1.5B full, auto")
    big = by_name.get("7B LoRA, auto for 40 GiB")
    lines.append("")
    if old and new:
        lines.append(f"1.5B LoRA: auto / old path = {new['tokens_per_second'] / old['tokens_per_second']:.2f}x; "
                     f"auto {new['tokens_per_second']:,.0f} tokens/s (target >= 18,000)")
    if new and causal:
        lines.append(f"1.5B LoRA: packed / one causal row = {new['tokens_per_second'] / causal['tokens_per_second']:.2f}"
                     " (target >= 0.90)")
    if full:
        lines.append(f"1.5B full fine-tuning: {full['tflops']:.0f} model TFLOP/s (target >= 250)")
    if big and big["peak_gib"] is not None:
        lines.append(f"7B LoRA for a 40 GiB GPU: peak {big['peak_gib']:.1f} GiB (target <= 36)")
    fills = [r["fill"] for r in results if "fill" in r]
    if fills:
        lines.append(f"rows: {statistics.mean(fills):,.0f} tokens each on average")
    measured = [r for r in results if r.get("peak_gib")]
    if measured:
        worst = max(measured, key=lambda r: abs(r["predicted_gib"] / r["peak_gib"] - 1))
        lines.append(f"memory model: largest error {worst['predicted_gib'] / worst['peak_gib'] - 1:+.1%} "
                     f"({worst['case']['name']}; target within 15%)")
    return lines


def write(out: str, lines: list[str], results: list[dict], checks: list[dict]) -> None:
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(out + ".json", "w") as f:
        json.dump({"results": results, "checks": checks}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="tiny shapes on CPU")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per case (default 4, dry 3)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    parser.add_argument("--only", nargs="*", help="run only the cases whose names contain one of these")
    parser.add_argument("--timeout", type=float, default=240, help="seconds one case may take")
    parser.add_argument("--out", help="also write the table and the raw results here (Markdown + JSON)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child process: run this case, print JSON
    parser.add_argument("--checks", action="store_true", help=argparse.SUPPRESS)  # a child: run the checks
    args = parser.parse_args()
    steps = args.steps or (3 if args.dry else 4)
    warmup = args.warmup
    if args.case:
        print(json.dumps(run_case(Case(**json.loads(args.case)), args.dry, steps, warmup)))
        return
    if args.checks:
        print(json.dumps({"checks": run_checks(args.dry)}))
        return

    import torch

    device_type = "cpu" if args.dry else "cuda"
    if device_type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --dry for the CPU check")
    where = "CPU (dry: tiny shapes)" if args.dry else torch.cuda.get_device_name()
    print(f"{where}, torch {torch.__version__}, {steps} steps per case ({warmup} warm-up)", flush=True)
    # On a GPU each case gets a fresh process, so peaks and failures stay its own; the dry run's tiny CPU
    # cases share this one (a child's imports would take most of its time).
    flag = ["--dry"] if args.dry else []
    checks = _here(lambda: {"checks": run_checks(True)}) if args.dry else in_child(flag + ["--checks"], args.timeout)
    if "error" in checks:
        checks = {"checks": [{"check": f"checks failed: {checks['error']}", "value": float("nan"), "ok": False}]}
    results = []
    for case in cases(device_type):
        if args.only and not any(word in case.name for word in args.only):
            continue
        result = (_here(lambda: run_case(case, True, steps, warmup)) if args.dry else
                  in_child(flag + ["--steps", str(steps), "--warmup", str(warmup), "--case", json.dumps(asdict(case))],
                           args.timeout))
        results.append({"name": case.name, **result})
        print(f"  {case.name}: " + (result["error"] if "error" in result else
                                    f"{result['tokens_per_second']:,.0f} tokens/s, {result['compute']}")
              + f" ({result['seconds']:.0f} s)", flush=True)
        if args.out:  # after every case: a run cut short keeps what it measured
            write(args.out, report(results, checks["checks"]), results, checks["checks"])
    lines = report(results, checks["checks"])
    print("\n".join(lines))
    if args.out:
        write(args.out, lines, results, checks["checks"])
    if any("error" in r for r in results) or not all(c["ok"] for c in checks["checks"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
