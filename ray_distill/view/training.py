"""A training run as the student saw it: its packed sequences token by token, and its loss curve."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow.parquet as pq
from markupsafe import Markup, escape

from ray_distill.fileio import read_jsonl
from ray_distill.view.query import read_row
from ray_distill.view.run import read_json

IGNORE_INDEX = -100  # a label the loss skips (the training code's masking value)
SEQUENCES = Path("sft") / "sequences.parquet"
_tokenizer_lock = threading.Lock()


def tokenizer_dir(train_dir: Path, settings: dict) -> Optional[Path]:
    """The run's own export when it has one (its tokenizer is what it trained with), else the base student's
    files where this machine has them; None when it has neither (the page then shows token ids)."""
    export = train_dir / "model"
    if (export / "tokenizer_config.json").is_file():
        return export
    if not settings.get("student"):
        return None
    from ray_distill.models.resolve import resolve_model

    try:
        return resolve_model(settings["student"])
    except Exception:  # a hub model not in the cache (the viewer never downloads), or files gone
        return None


@lru_cache(maxsize=8)
def _load_decoder(directory: str) -> Callable[[list[int]], list[str]]:
    tokenizer_json = Path(directory) / "tokenizer.json"
    if tokenizer_json.is_file():
        # The tokenizers library alone decodes a fast tokenizer's file, without transformers' long import.
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(tokenizer_json))
        return lambda ids: fast.decode_batch([[i] for i in ids], skip_special_tokens=False)
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(directory)
    return lambda ids: slow.batch_decode([[i] for i in ids])


def decoder(directory: Optional[Path]) -> Callable[[list[int]], list[str]]:
    """Token ids to their texts one by one, with the tokenizer at `directory` (loaded once); without one,
    each token shows as its id."""
    if directory is None:
        return lambda ids: [f"[{i}]" for i in ids]
    with _tokenizer_lock:  # two first requests at once would each load it
        return _load_decoder(str(directory))


@dataclass
class PackedExample:
    key: str
    start: int  # first token's position in the sequence
    tokens: list[dict]  # {"id", "text", "label", "trained"}

    @property
    def trained(self) -> int:
        return sum(t["trained"] for t in self.tokens)


def packed_examples(row: dict, decode: Callable[[list[int]], list[str]]) -> list[PackedExample]:
    """A sequence split at each position-id restart into its examples, tokens decoded one by one."""
    ids, labels, positions, keys = row["input_ids"], row["labels"], row["position_ids"], row["keys"]
    starts = [i for i, p in enumerate(positions) if p == 0] or [0]
    texts = decode(ids)
    examples = []
    for n, (start, end) in enumerate(zip(starts, starts[1:] + [len(ids)])):
        tokens = [{"id": ids[i], "text": texts[i], "label": labels[i], "trained": labels[i] != IGNORE_INDEX}
                  for i in range(start, end)]
        examples.append(PackedExample(keys[n] if n < len(keys) else "?", start, tokens))
    return examples


def sequence_list(train_dir: Path) -> list[dict]:
    path = train_dir / SEQUENCES
    if not path.is_file():
        return []
    return pq.ParquetFile(path).read(columns=["index", "tokens", "trained_tokens", "keys"]).to_pylist()


def sequence(train_dir: Path, number: int) -> Optional[dict]:
    path = train_dir / SEQUENCES
    if not path.is_file():
        return None
    try:
        return read_row(path, number)
    except IndexError:
        return None


def steps(train_dir: Path) -> list[dict]:
    """The logged optimizer steps (a line torn by a run still writing is skipped)."""
    try:
        return read_jsonl(train_dir / "logs" / "steps.jsonl")
    except OSError:  # unreadable: the page shows no curve
        return []


def loss_svg(entries: list[dict[str, Any]], width: int = 640, height: int = 240) -> Optional[Markup]:
    """The loss against the step as an inline SVG line chart, with its range on the axes."""
    points = [(e["step"], e["loss"]) for e in entries if isinstance(e.get("loss"), (int, float))
              and isinstance(e.get("step"), (int, float))]
    if not points:
        return None
    pad = 40
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> str:
        return (f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
                f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}")

    line = " ".join(at(x, y) for x, y in points)
    dots = "".join(f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" r="2">'
                   f"<title>step {x}: loss {y:.4f}</title></circle>" for x, y in points)
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>'
            f'<text x="{pad}" y="{height - pad + 16}">{escape(str(x0))}</text>'
            f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">step {escape(str(max(xs)))}</text>'
            f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end">{y0:.3g}</text>'
            f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{max(ys):.3g}</text>')
    return Markup(f'<svg data-testid="loss-curve" data-points="{len(points)}" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss">{axes}'
                  f'<polyline fill="none" points="{line}"/>{dots}</svg>')


def read_json_text(path: Path) -> Optional[str]:
    """A JSON file pretty-printed for a page, or None."""
    value = read_json(path)
    return None if value is None else json.dumps(value, indent=2)
