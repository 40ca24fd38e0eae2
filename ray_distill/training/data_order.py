"""Which sequences each optimizer step trains on, and where a resumed run picks up.

Every worker reads the same stream of packed sequences in the same order
(Ray Data with `preserve_order`), shuffles it with the same seeded buffer
for the epoch, cuts it into global batches, and keeps its own rank's share.
The order is therefore a function of (data, seed, epoch) alone, and a data
position (epoch, steps done in it) saved in a checkpoint is enough to resume
at exactly the next batch: the stream is replayed and the done steps skipped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DataPosition:
    """The next batch to train: `step` global batches of `epoch` are done."""

    epoch: int = 0
    step: int = 0

    def advanced(self, steps_per_epoch: int) -> "DataPosition":
        """The position after one more step; the last step of an epoch leads to the next epoch's start."""
        if self.step + 1 >= steps_per_epoch:
            return DataPosition(self.epoch + 1, 0)
        return DataPosition(self.epoch, self.step + 1)


def steps_per_epoch(num_sequences: int, global_batch: int) -> int:
    """Optimizer steps per epoch; a last, smaller batch still makes a step."""
    return math.ceil(num_sequences / global_batch)


def shuffled(items: Iterable[T], seed: int, epoch: int, buffer: int) -> Iterator[T]:
    """A seeded streaming shuffle: a buffer of `buffer` items, one drawn at random per new item.
    With a buffer at least the stream's length it is a full uniform shuffle."""
    rng = random.Random(f"{seed}:{epoch}")
    pool: list[T] = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        i = rng.randrange(len(pool))
        yield pool[i]
        pool[i] = item
    rng.shuffle(pool)
    yield from pool


def global_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def micro_batches(batch: Sequence[T], rank: int, world: int, micro: int, accumulation: int) -> list[list[T]]:
    """This rank's share of a global batch (every `world`-th item from `rank`), in `accumulation`
    micro-batches of up to `micro` items; a short last global batch leaves some empty, so every
    rank makes the same number of micro-steps per optimizer step."""
    mine = list(batch[rank::world])
    if len(mine) > micro * accumulation:
        raise ValueError(f"a global batch of {len(batch)} does not fit {world} x {accumulation} x {micro}")
    return [mine[i * micro:(i + 1) * micro] for i in range(accumulation)]
