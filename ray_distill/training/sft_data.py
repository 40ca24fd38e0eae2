"""The SFT data set of a training run: kept teacher records to tokenized, packed sequences.

Built once per run in one process (tokenizing a few thousand conversations
takes seconds) and written as Parquet; Ray Data then streams it into the
training workers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
from transformers import AutoTokenizer, GenerationConfig

from ray_distill.fileio import write_parquet_atomic
from ray_distill.training.examples import (ConversationTokenizer, SFTExample, cot_messages, fit_length,
                                           stop_token_ids, student_messages)
from ray_distill.training.packing import one_per_sequence, pack

SEQUENCE_SCHEMA = pa.schema([
    ("index", pa.int64()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
    ("position_ids", pa.list_(pa.int32())), ("keys", pa.list_(pa.string())), ("tokens", pa.int32()),
    ("trained_tokens", pa.int32()),
])


def record_key(row: dict) -> str:
    return f"{row['dataset']}/{row['example_id']}/{row.get('sample', 0)}"


def conversation(row: dict, data: str) -> list[dict]:
    return student_messages(row["messages"]) if data == "agent" else cot_messages(row)


def sft_examples(rows: Iterable[dict], data: str, tokenize: ConversationTokenizer, max_length: int,
                 truncation: str) -> tuple[list[SFTExample], Counter]:
    """The examples of the kept records, fitted to `max_length`; counts of what happened."""
    examples, counts = [], Counter()
    for row in rows:
        counts["records"] += 1
        example = fit_length(tokenize(record_key(row), conversation(row, data)), max_length, truncation)
        if example is None:  # longer than max_length, and dropped or cut to no target at all
            counts["dropped_too_long" if truncation == "drop" else "dropped_no_target_within_max_length"] += 1
            continue
        counts["truncated"] += example.truncated
        examples.append(example)
    counts["examples"] = len(examples)
    return examples, counts


def build_sft(rows: list[dict], data: str, model_dir: Path, train, out_dir: Path) -> dict[str, Any]:
    """Write `sequences.parquet` under `out_dir`; returns its summary."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        generation_config = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        generation_config = None
    tokenize = ConversationTokenizer(tokenizer, stop_token_ids(tokenizer, generation_config))
    examples, counts = sft_examples(rows, data, tokenize, train.max_length, train.truncation)
    sequences = pack(examples, train.max_length) if train.packing else one_per_sequence(examples)
    table = pa.Table.from_pylist([{"index": i, **s.to_row()} for i, s in enumerate(sequences)], schema=SEQUENCE_SCHEMA)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, out_dir / "sequences.parquet")
    tokens = sum(len(e) for e in examples)
    return {**counts, "sequences": len(sequences), "tokens": tokens,
            "trained_tokens": sum(e.trained_tokens for e in examples),
            "fill": tokens / (len(sequences) * train.max_length) if sequences else 0.0}
