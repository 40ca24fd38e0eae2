"""scripts/bench/gpu_train.py stays runnable: its dry run on CPU, its per-case child processes, and a bare
GPU machine's constraint that the trainer imports and runs without Ray, DeepSpeed, faiss or vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench" / "gpu_train.py"
# The packages a bare GPU machine lacks and that are too large to send there (OmegaConf can be: it is small).
ABSENT = ("ray", "deepspeed", "faiss", "vllm")
# As if not installed: `import` fails and `importlib.util.find_spec` (how transformers probes) says None.
BLOCK = f"""
import sys
for name in {ABSENT!r}:
    sys.modules[name] = None
"""
TRAINER = ["ray_distill.training." + name for name in (
    "attention", "chunked_loss", "data_order", "engines", "examples", "loop", "loss", "memory", "optim", "packing",
    "sizing", "step_log", "student")]


def run(*args: str, code: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, str(BENCH)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
@pytest.mark.deepspeed
def test_the_dry_bench_runs_every_case_and_check_on_cpu(tmp_path):
    done = run("--dry", "--out", str(tmp_path / "bench"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    names = [r["name"] for r in results["results"]]
    assert {"1.5B LoRA, old path", "1.5B LoRA, auto", "1.5B LoRA, auto, one causal row", "1.5B full, old path",
            "1.5B full, auto", "7B LoRA, auto for 40 GiB", "7B full, ZeRO-3"} <= set(names)
    by_name = {r["name"]: r for r in results["results"]}
    assert by_name["1.5B LoRA, old path"]["compute"].startswith("attention sdpa, loss full")
    assert by_name["1.5B LoRA, auto"]["compute"].startswith("attention segments, loss chunked")
    # ZeRO-3 gathers the untied head for the loss and reduces its gradient: the same steps as ZeRO-2.
    zero2, zero3 = by_name["7B full, ZeRO-2"], by_name["7B full, ZeRO-3"]
    assert zero3["engine"] == "DeepSpeed ZeRO-3" and zero2["engine"] == "DeepSpeed ZeRO-2"
    assert zero3["losses"] == pytest.approx(zero2["losses"], rel=1e-3)
    assert zero2["losses"][1] < zero2["losses"][0] - 0.1  # a step on the same row lowers its loss: weights moved
    assert all(r["tokens_per_second"] > 0 and r["predicted_gib"] > 0 for r in results["results"])
    checks = {c["check"].split(":")[0]: c["ok"] for c in results["checks"]}
    assert checks == {"attention segments": True, "attention sdpa": True, "attention eager": True, "loss full": True}
    assert "| 1.5B LoRA, auto | attention segments" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
@pytest.mark.deepspeed
def test_a_case_runs_in_its_own_process_as_on_the_gpu():
    case = {"name": "child", "student": "0.5b", "lora": False}
    done = run("--dry", "--steps", "2", "--case", json.dumps(case))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["case"]["name"] == "child" and len(result["losses"]) == 2 and result["engine"] == "DeepSpeed ZeRO-2"


def test_the_trainer_and_the_bench_import_and_train_without_ray_deepspeed_faiss_or_vllm():
    imports = BLOCK + "".join(f"import {module}\n" for module in TRAINER) + f"""
import runpy
bench = runpy.run_path({str(BENCH)!r})
result = bench["run_case"](bench["Case"]("no DeepSpeed", "1.5b"), dry=True, steps=2, warmup=1)
assert result["engine"] == "torch", result
assert all(sys.modules[name] is None for name in {ABSENT!r})
print("ok")
"""
    done = run(code=imports)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
