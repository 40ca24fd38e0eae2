"""Model directories with missing or broken files: generated from the embedded tiny model (whole, sharded,
as a LoRA adapter) and the embedded embedder, through `resolve_model` / `resolve_embedder` and
`parameter_count`, a few through the CLI, and (slow) every directory they accept loaded by transformers.
A directory either resolves, and then loads, or fails with one line naming the directory or the file."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Callable, Optional

import pytest

from ray_distill.errors import first_line
from ray_distill.models import resolve_embedder, resolve_model
from ray_distill.models.resolve import _minilm_folder
from ray_distill.models.size import parameter_count

from fuzzing import INVALID_UTF8, Case, cli, cli_problem, error_problem, inserted, outcome, run_cases, truncated


def linked_copy(source: Path, target: Path) -> None:
    """A copy whose files are hard links: a case changes only the files it rewrites."""
    shutil.copytree(source, target, copy_function=os.link)


def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def safetensors_bytes(header, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def json_accepted(name: str, data: bytes) -> bool:
    """Whether a directory may hold `data` as its file `name`, by the JSON standard and the few keys a
    load cannot do without."""
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return False
    key = {"config.json": "model_type", "adapter_config.json": "base_model_name_or_path"}.get(name)
    if key and not (isinstance(value, dict) and isinstance(value.get(key), str) and value[key].strip()):
        return False
    if name.endswith(".index.json"):
        return isinstance(value, dict) and isinstance(value.get("weight_map"), dict)
    return True


def template_accepted(data: bytes) -> bool:
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, jinja2.TemplateSyntaxError):
        return False
    return True


class Seeds:
    """The valid directories cases start from, and how each is resolved."""

    def __init__(self, tmp_path: Path, tiny: Path):
        self.root = tmp_path / "seeds"
        self.root.mkdir()
        self.tiny = self.root / "tiny"
        linked_copy(tiny, self.tiny)
        self.sharded = self.root / "sharded"
        shutil.copytree(tiny, self.sharded, copy_function=os.link, ignore=shutil.ignore_patterns("*.safetensors"))
        header, body = safetensors_parts((tiny / "model.safetensors").read_bytes())
        names = sorted(n for n in header if n != "__metadata__")
        weight_map = {}
        for part, chosen in enumerate((names[::2], names[1::2]), 1):
            file = f"model-0000{part}-of-00002.safetensors"
            kept, start, chunks = {}, 0, []
            for name in chosen:
                begin, end = header[name]["data_offsets"]
                kept[name] = {**header[name], "data_offsets": [start, start + end - begin]}
                chunks.append(body[begin:end])
                start += end - begin
                weight_map[name] = file
            (self.sharded / file).write_bytes(safetensors_bytes(kept, b"".join(chunks)))
        (self.sharded / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}))
        self.adapter = self.root / "adapter"
        shutil.copytree(tiny, self.adapter, copy_function=os.link,
                        ignore=shutil.ignore_patterns("*.safetensors", "config.json", "generation_config.json"))
        (self.adapter / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": str(tiny), "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2,
             "lora_alpha": 4, "target_modules": ["q_proj"]}))
        lora = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [2, 8],
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [8, 2]}
        offsets, start = {}, 0
        for name, shape in lora.items():
            offsets[name] = {"dtype": "F32", "shape": shape, "data_offsets": [start, start + 64]}
            start += 64
        (self.adapter / "adapter_model.safetensors").write_bytes(safetensors_bytes(offsets, bytes(start)))
        self.embedder = self.root / "embedder"
        linked_copy(_minilm_folder(), self.embedder)

    def resolver(self, seed: Path) -> Callable[[str], Path]:
        return (lambda name: resolve_embedder(name).path) if seed == self.embedder else resolve_model


def model_cases(tmp_path: Path, seeds: Seeds) -> list[Case]:
    rng = random.Random(31)
    cases: list[Case] = []

    def add(name: str, seed: Path, changes: dict[str, Optional[bytes]], must_fail: bool, names=()) -> None:
        """A copy of `seed` with `changes` (file name -> new bytes, or None: deleted)."""
        directory = tmp_path / "cases" / name
        linked_copy(seed, directory)
        for file, data in changes.items():
            (directory / file).unlink(missing_ok=True)
            if data is not None:
                (directory / file).write_bytes(data)
        cases.append(Case(name, directory, [str(directory), *names] if must_fail else None, extra={"seed": seed}))

    def accepted(file: str, data: bytes) -> bool:
        if file.endswith(".json"):
            return json_accepted(file, data)
        if file.endswith(".jinja"):
            return template_accepted(data)
        return not file.endswith(".safetensors")  # any change to a safetensors file breaks it

    required = {"config.json", "adapter_config.json", "model.safetensors", "adapter_model.safetensors",
                "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    for seed in (seeds.tiny, seeds.sharded, seeds.adapter, seeds.embedder):
        files = sorted(p.name for p in seed.iterdir() if p.is_file())
        if seed != seeds.tiny:  # the tokenizer files are the tiny model's: mutated there once
            files = [f for f in files if f not in {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
                     or seed == seeds.embedder]
        for file in files:
            data = (seed / file).read_bytes()
            label = f"{seed.name}-{file}"
            tokenizers = {"tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt"} & set(files)
            add(f"{label}-deleted", seed, {file: None}, file in required or tokenizers == {file}, [file])
            if len(data) > 10 << 20:  # the embedder's weights: deleting them is enough
                continue
            for n in range(3):
                offset, changed = truncated(rng, data)
                add(f"{label}-truncated-{n}-at-{offset}", seed, {file: changed}, not accepted(file, changed), [file])
            for n in range(2):
                offset, changed = inserted(rng, data, rng.choice(INVALID_UTF8))
                add(f"{label}-invalid-utf8-{n}-at-{offset}", seed, {file: changed}, not accepted(file, changed), [file])
            offset, changed = inserted(rng, data, b"\x00")
            add(f"{label}-nul-at-{offset}", seed, {file: changed}, not accepted(file, changed), [file])
            add(f"{label}-empty", seed, {file: b""}, not accepted(file, b""), [file])

    config = json.loads((seeds.tiny / "config.json").read_text())
    for name, value in (("list", [1]), ("string", "llama"), ("null", None),
                        ("model_type-int", {**config, "model_type": 5}),
                        ("model_type-null", {**config, "model_type": None}),
                        ("model_type-empty", {**config, "model_type": " "}),
                        ("model_type-list", {**config, "model_type": ["llama"]}),
                        ("model_type-missing", {k: v for k, v in config.items() if k != "model_type"})):
        add(f"config-{name}", seeds.tiny, {"config.json": json.dumps(value).encode()}, True, ["config.json"])
    for name, value in (("extra-key", {**config, "zz": 1}), ("huge-field", {**config, "zz": "x" * (5 << 20)}),
                        ("nan-field", {**config, "zz": float("nan")}),
                        ("deep-90", {**config, "zz": json.loads("[" * 90 + "]" * 90)})):
        add(f"config-{name}", seeds.tiny, {"config.json": json.dumps(value).encode()}, False)
    deep = json.dumps({**config, "zz": json.loads("[" * 500 + "]" * 500)}).encode()
    add("config-deep-500", seeds.tiny, {"config.json": deep}, True, ["config.json", "nested deeper"])
    text = json.dumps(config)
    add("config-deep-100000", seeds.tiny, {"config.json": text[:-1].encode() + b', "zz": ' + b"[" * 100_000 +
                                           b"]" * 100_000 + b"}"}, True, ["config.json", "nested too deeply"])
    add("config-twice-last-valid", seeds.tiny,
        {"config.json": ('{"model_type": 5, ' + text[1:]).encode()}, False)
    add("config-twice-last-invalid", seeds.tiny,
        {"config.json": (text[:-1] + ', "model_type": 5}').encode()}, True, ["config.json"])

    header, body = safetensors_parts((seeds.tiny / "model.safetensors").read_bytes())
    first = sorted(n for n in header if n != "__metadata__")[0]

    def tensor(**entry) -> dict:
        return {**header, first: {**header[first], **entry}}

    begin, end = header[first]["data_offsets"]
    for name, data in (
            ("shape-string", safetensors_bytes(tensor(shape="8"), body)),
            ("shape-negative", safetensors_bytes(tensor(shape=[-1, 8]), body)),
            ("shape-doubled", safetensors_bytes(tensor(shape=[2 * d for d in header[first]["shape"]]), body)),
            ("offsets-reversed", safetensors_bytes(tensor(data_offsets=[end, begin]), body)),
            ("offsets-beyond", safetensors_bytes(tensor(data_offsets=[begin, len(body) + 64]), body)),
            ("offsets-three", safetensors_bytes(tensor(data_offsets=[begin, end, end]), body)),
            ("dtype-int", safetensors_bytes(tensor(dtype=4), body)),
            ("entry-list", safetensors_bytes({**header, first: [1, 2]}, body)),
            ("header-list", safetensors_bytes([header], body)),
            ("header-empty", safetensors_bytes({}, body)),
            ("metadata-list", safetensors_bytes({**header, "__metadata__": ["x"]}, body)),
            ("junk-after", safetensors_bytes(header, body) + b"junk"),
            ("length-zero", struct.pack("<Q", 0) + body),
            ("length-huge", struct.pack("<Q", 2**63) + body),
            ("length-beyond", struct.pack("<Q", len(body) + 100) + body),
            ("header-not-json", struct.pack("<Q", 4) + b"{{{{" + body),
            ("seven-bytes", b"\x01" * 7)):
        add(f"safetensors-{name}", seeds.tiny, {"model.safetensors": data}, True, ["model.safetensors"])
    add("safetensors-metadata-strings", seeds.tiny,
        {"model.safetensors": safetensors_bytes({**header, "__metadata__": {"format": "pt"}}, body)}, False)

    index = json.loads((seeds.sharded / "model.safetensors.index.json").read_text())
    shard = next(iter(index["weight_map"].values()))
    for name, value in (("no-weight-map", {"metadata": {}}), ("weight-map-list", {"weight_map": [shard]}),
                        ("names-a-missing-file", {"weight_map": {**index["weight_map"], "extra": "gone.safetensors"}}),
                        ("names-an-int", {"weight_map": {**index["weight_map"], "extra": 3}}),
                        ("not-an-object", [index])):
        add(f"index-{name}", seeds.sharded, {"model.safetensors.index.json": json.dumps(value).encode()}, True,
            ["model.safetensors.index.json"])
    adapter = json.loads((seeds.adapter / "adapter_config.json").read_text())
    for name, value in (("int", 3), ("null", None), ("empty", ""), ("list", ["x"])):
        add(f"adapter-base-{name}", seeds.adapter,
            {"adapter_config.json": json.dumps({**adapter, "base_model_name_or_path": value}).encode()}, True,
            ["adapter_config.json"])
    add("adapter-base-missing", seeds.adapter, {"adapter_config.json": json.dumps(
        {k: v for k, v in adapter.items() if k != "base_model_name_or_path"}).encode()}, True, ["adapter_config.json"])
    add("extra-text-file", seeds.tiny, {"NOTES.txt": b"\xff\x00 anything"}, False)
    add("extra-json-list", seeds.tiny, {"extra.json": b"[1, 2]"}, False)
    add("extra-json-broken", seeds.tiny, {"extra.json": b"{"}, True, ["extra.json"])
    add("no-tokenizer", seeds.tiny, {"tokenizer.json": None, "tokenizer_config.json": None}, True, ["tokenizer"])
    add("weights-and-tokenizer-only", seeds.tiny, {"generation_config.json": None, "chat_template.jinja": None}, False)
    return cases


@pytest.fixture
def seeds(tmp_path, tiny_model) -> Seeds:
    return Seeds(tmp_path, tiny_model)


def expected_parameters(directory: Path) -> Optional[int]:
    """Parameters by the safetensors headers, read here without the code under test."""
    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        header, _ = safetensors_parts(path.read_bytes())
        total += sum(math.prod(t["shape"]) for n, t in header.items() if n != "__metadata__")
    return total or None


def test_generated_model_directories_resolve_or_name_the_file(tmp_path, seeds, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name that is not a directory must not reach the network
    cases = model_cases(tmp_path, seeds)
    for name, names in (("/nonexistent/model", ["/nonexistent/model"]), ("x" * 5000, ["unknown model"]),
                        ("org/" + "x" * 5000, ["org/"]), ("a\x00b", ["unknown model"]),
                        (str(seeds.tiny / "config.json"), ["holds no config.json"])):
        cases.append(Case(f"name-{name[:20]!r}", name, names, extra={"seed": seeds.tiny}))

    def check(case: Case) -> Optional[str]:
        path, error = outcome(seeds.resolver(case.extra["seed"]), str(case.data))
        if error is None:
            count, error = outcome(parameter_count, path)
        if error is not None:
            return error_problem(error, case.names) if case.names is not None else \
                f"refused, though a load would work: {error!r:.300}"
        if case.names is not None:
            return "resolved, though it is broken"
        if Path(path) != case.data or count != expected_parameters(case.data):
            return f"resolved to {path} with {count} parameters"
        return None

    run_cases(cases, check)


@pytest.mark.slow
def test_every_model_directory_the_resolver_accepts_loads_in_transformers(tmp_path, seeds, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    accepted = [c for c in model_cases(tmp_path, seeds)
                if c.names is None and c.extra["seed"] in (seeds.tiny, seeds.sharded)]

    def check(case: Case) -> Optional[str]:
        try:
            tokenizer = AutoTokenizer.from_pretrained(case.data)
            AutoModelForCausalLM.from_pretrained(case.data)
            if tokenizer.chat_template:
                tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
        except Exception as e:
            return f"resolved, but transformers cannot load it: {first_line(e)}"
        return None

    run_cases(accepted, check, minimum=10)


def test_broken_model_directories_through_the_cli_are_one_line_without_traceback(tmp_path, seeds):
    truncated_weights = tmp_path / "truncated"
    linked_copy(seeds.tiny, truncated_weights)
    data = (truncated_weights / "model.safetensors").read_bytes()
    (truncated_weights / "model.safetensors").unlink()
    (truncated_weights / "model.safetensors").write_bytes(data[:len(data) // 2])
    broken_config = tmp_path / "config"
    linked_copy(seeds.tiny, broken_config)
    (broken_config / "config.json").unlink()
    (broken_config / "config.json").write_bytes(b'{"model_type": "llama", "hidden_size": \xff}')
    for args, names in ((["models", str(truncated_weights)], [str(truncated_weights / "model.safetensors")]),
                        (["models", str(broken_config)], [str(broken_config / "config.json"), "line 1"]),
                        (["models", "--embedder", str(broken_config)], [str(broken_config / "config.json")])):
        assert not cli_problem(proc := cli(*args), names), (args, cli_problem(proc, names))
