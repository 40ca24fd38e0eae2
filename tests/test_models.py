from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from ray_distill.errors import ModelNotFoundError
from ray_distill.models import embedder_prefixes, resolve_embedder, resolve_model
from ray_distill.models.cache import build_once



def _slow_build(log: str):
    def build(tmp: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        (tmp / "weights").write_text("ok")

    return build


def _resolve_in_child(cache: str, log: str, queue) -> None:
    os.environ["RAY_DISTILL_CACHE"] = cache
    queue.put(str(build_once("models/x-v1", _slow_build(log))))


def test_concurrent_processes_build_once(tmp_path):
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_resolve_in_child, args=(str(tmp_path / "cache"), str(log), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert paths == {str(tmp_path / "cache" / "models" / "x-v1")}
    assert len(log.read_text().splitlines()) == 1
    assert (tmp_path / "cache" / "models" / "x-v1" / "weights").read_text() == "ok"


def test_a_crashed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_DISTILL_CACHE", str(tmp_path))

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        build_once("models/y-v1", broken)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["y-v1.lock"]
    path = build_once("models/y-v1", _slow_build(str(tmp_path / "log")))
    assert (path / "weights").is_file() and not (path / "half").exists()


def _digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_tiny_random_is_deterministic_and_generates(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_DISTILL_CACHE", str(tmp_path))
    rebuilt = resolve_model("tiny-random")
    assert rebuilt != tiny_model
    assert _digest(rebuilt) == _digest(tiny_model)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x = 17 * 23"}],
        add_generation_prompt=True, tokenize=False,
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx = 17 * 23<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == text  # byte-level BPE round-trips any text
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8 or out[0, -1] == tok.eos_token_id


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model("smollm2-135m-instruct")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
@pytest.mark.vllm
def test_smollm2_loads_in_vllm_and_matches_transformers_greedy(local_ray):
    from ray_distill.distributed.engines import EngineRouter
    from ray_distill.engines import GenerationRequest, SamplingParams
    from ray_distill.engines.hf import HFEngine
    from ray_distill.engines.spec import EngineSpec

    request = GenerationRequest([{"role": "user", "content": "What is 17*23?"}], SamplingParams(max_new_tokens=12))
    router = EngineRouter.launch(EngineSpec("vllm", "smollm2-135m-instruct", {"max_model_len": 2048}))
    try:
        (vllm_completion,) = asyncio.run(_gather(router, request))
    finally:
        asyncio.run(router.close())
    hf_completion = HFEngine("smollm2-135m-instruct").generate_batch([request])[0]
    assert vllm_completion.texts[0].strip() and vllm_completion.texts == hf_completion.texts


async def _gather(engine, *requests):
    return await asyncio.gather(*(engine.generate(r) for r in requests))


def test_local_path_passes_through(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model)) == tiny_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_unknown_names_are_clear_errors():
    with pytest.raises(ModelNotFoundError, match="unknown model 'smollm3'.*tiny-random"):
        resolve_model("smollm3")
    with pytest.raises(ModelNotFoundError, match="unknown embedder 'minilm'.*minilm-l6"):
        resolve_embedder("minilm")


def test_missing_hub_id_fails_fast_offline_and_online(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the local HF cache and HF_HUB_OFFLINE is set"):
        resolve_model("ray-distill-tests/no-such-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="could not be downloaded"):
        resolve_model("ray-distill-tests/no-such-model")
    assert time.monotonic() - start < 90


@pytest.mark.parametrize(
    "name, prefixes",
    [
        ("intfloat/e5-base-v2", ("query: ", "passage: ")),
        ("intfloat/multilingual-e5-large", ("query: ", "passage: ")),
        ("/models/e5-small-v2", ("query: ", "passage: ")),
        ("BAAI/bge-base-en-v1.5", ("Represent this sentence for searching relevant passages: ", "")),
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
        ("acme/pipe5-model", ("", "")),
    ],
)
def test_embedder_prefixes(name, prefixes):
    assert embedder_prefixes(name) == prefixes


@pytest.mark.slow
def test_embedded_embedder_encodes_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from ray_distill.data.world import World
    from ray_distill.data.world.passages import person_passages
    from ray_distill.tools.retrieval import Encoder

    encoder = Encoder("minilm-l6", device="cpu")
    assert encoder.dim == 384 and encoder.spec.query_prefix == ""
    world = World(0, 500)
    people = [world.person(i) for i in range(20)]
    passages = [person_passages(world, p)[0]["contents"] for p in people]
    vectors = encoder.encode_passages(passages)
    assert vectors.dtype == np.float32 and vectors.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    queries = encoder.encode_queries([f"Where was {p.name} born?" for p in people])
    top = (queries @ vectors.T).argmax(axis=1)
    assert (top == np.arange(20)).mean() >= 0.9
