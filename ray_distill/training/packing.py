"""Packing SFT examples into training sequences, and sequences into model inputs.

Several short examples share one sequence of at most `seq_len` tokens (first
fit, longest first); an example is never split across sequences. Position ids
restart at 0 for each example, which is how every attention path of
`attention.py` finds the example boundaries, so no token attends across one.
Padding starts at position 0 too: one more example, never trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ray_distill.training.examples import SFTExample

IGNORE_INDEX = -100  # the label torch's cross entropy skips


@dataclass(frozen=True)
class PackedSequence:
    """One training row: examples laid end to end."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where the token is not a target
    position_ids: list[int]
    keys: list[str]  # the examples it holds, in order

    def to_row(self) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels, "position_ids": self.position_ids,
                "keys": self.keys, "tokens": len(self.input_ids),
                "trained_tokens": sum(label != IGNORE_INDEX for label in self.labels)}


def _concat(examples: Sequence[SFTExample]) -> PackedSequence:
    input_ids, labels, positions = [], [], []
    for example in examples:
        input_ids += example.input_ids
        # An example's first token has nothing before it in its block to be predicted from.
        labels += [IGNORE_INDEX] + [token if trained else IGNORE_INDEX
                                    for token, trained in zip(example.input_ids[1:], example.trained[1:])]
        positions += range(len(example))
    return PackedSequence(input_ids, labels, positions, [e.key for e in examples])


def pack(examples: Sequence[SFTExample], seq_len: int) -> list[PackedSequence]:
    """Examples packed into sequences of at most `seq_len` tokens (first-fit decreasing: deterministic,
    within 22% of the fewest sequences possible). Each example must already fit."""
    too_long = [e.key for e in examples if len(e) > seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} examples exceed the sequence length {seq_len}, e.g. {too_long[0]}")
    bins: list[list[SFTExample]] = []
    room: list[int] = []
    for example in sorted(examples, key=lambda e: (-len(e), e.key)):
        slot = next((i for i, free in enumerate(room) if free >= len(example)), None)
        if slot is None:
            bins.append([])
            room.append(seq_len)
            slot = len(bins) - 1
        bins[slot].append(example)
        room[slot] -= len(example)
    return [_concat(b) for b in bins]


def one_per_sequence(examples: Sequence[SFTExample]) -> list[PackedSequence]:
    """No packing: each example is its own sequence (padding fills the batch)."""
    return [_concat([e]) for e in examples]


def collate(rows: Sequence[dict], pad_id: int):
    """Rows (as stored) to a right-padded batch of tensors: input_ids, labels, position_ids.
    Padding gets its own position block from 0, so it forms a separate packed segment."""
    width = max(len(row["input_ids"]) for row in rows)
    batch = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        pad = width - len(row["input_ids"])
        batch["input_ids"].append(list(row["input_ids"]) + [pad_id] * pad)
        batch["labels"].append(list(row["labels"]) + [IGNORE_INDEX] * pad)
        batch["position_ids"].append(list(row["position_ids"]) + list(range(pad)))
    return {name: torch.tensor(values, dtype=torch.long) for name, values in batch.items()}
