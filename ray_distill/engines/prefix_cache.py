"""Keys and values of prompt prefixes the hf engine has computed, for prompts that repeat them.

Agent prompts repeat a lot: every request starts with the same system prompt
and worked examples, and each step of an episode extends the prompt of its
previous step. A block stores only the tokens its parent block does not
hold, so a thousand episodes sharing one system prompt store it once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(eq=False)
class KVBlock:
    """The KV of `tokens` (a prefix from position 0): `parent` holds the first part,
    `keys`/`values` (per layer, shape (1, kv_heads, length, head_dim)) the rest."""

    tokens: tuple[int, ...]
    parent: Optional["KVBlock"]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def start(self) -> int:
        return len(self.parent.tokens) if self.parent else 0

    def span(self, layer: int, begin: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions [begin, end) of one layer, shape (1, kv_heads, end - begin, head_dim)."""
        keys, values = [], []
        block = self
        while block is not None and begin < end:
            lo = max(begin, block.start)
            if lo < end:
                keys.append(block.keys[layer][:, :, lo - block.start:end - block.start])
                values.append(block.values[layer][:, :, lo - block.start:end - block.start])
                end = lo
            block = block.parent
        if len(keys) == 1:
            return keys[0], values[0]
        return torch.cat(keys[::-1], dim=2), torch.cat(values[::-1], dim=2)


class PrefixCache:
    """Least-recently-used blocks, bounded by the tokens they hold themselves.

    A prompt can reuse any cached prefix of it, also one that ends inside a
    block (another episode's prompt shares the system prompt, then differs):
    the block is split there, so the shared part becomes a parent block.
    Adding or using a block refreshes its ancestors after it, so a parent is
    always more recent than its cached children and is evicted after them:
    the tokens counted are the tokens held."""

    def __init__(self, max_tokens: int, min_match: int = 1):
        self.max_tokens = max_tokens
        self.min_match = min_match
        self._blocks: "OrderedDict[tuple[int, ...], KVBlock]" = OrderedDict()
        self._held = 0

    def longest(self, tokens: Sequence[int], limit: int) -> Optional[KVBlock]:
        """A block holding the longest cached prefix of `tokens[:limit]` (None if shorter than `min_match`)."""
        tokens = tuple(tokens[:limit])
        best, matched = None, 0
        for block in self._blocks.values():
            length = _common_length(block.tokens, tokens)
            if length > matched or (length == matched and best is not None and len(block.tokens) < len(best.tokens)):
                best, matched = block, length
        if best is None or matched < self.min_match:
            return None
        while best.start >= matched:
            best = best.parent
        if len(best.tokens) > matched:
            best = self._split(best, matched)
        self._refresh(best)
        return best

    def _refresh(self, block: Optional[KVBlock]) -> None:
        """Mark a block and its ancestors used, each more recently than its children."""
        while block is not None:
            if block.tokens in self._blocks:
                self._blocks.move_to_end(block.tokens)
            block = block.parent

    def add(self, block: KVBlock) -> None:
        size = len(block.tokens) - block.start
        if size > self.max_tokens or block.tokens in self._blocks:
            return
        self._blocks[block.tokens] = block
        self._held += size
        self._refresh(block.parent)
        while self._held > self.max_tokens:
            _, old = self._blocks.popitem(last=False)
            self._held -= len(old.tokens) - old.start

    def _split(self, block: KVBlock, at: int) -> KVBlock:
        """Make `block.tokens[:at]` a block of its own, the parent of the rest of `block`."""
        cut = at - block.start
        head = KVBlock(block.tokens[:at], block.parent, [k[:, :, :cut].clone() for k in block.keys],
                       [v[:, :, :cut].clone() for v in block.values])
        block.parent = head
        block.keys = [k[:, :, cut:].clone() for k in block.keys]
        block.values = [v[:, :, cut:].clone() for v in block.values]
        if block.tokens in self._blocks:  # its tokens now count under the head
            self._held -= cut
            self.add(head)
        return head


def _common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix, by bisection over C-speed tuple comparisons."""
    if not a or not b or a[0] != b[0]:
        return 0
    low, high = 1, min(len(a), len(b))  # a[:low] == b[:low]; answer <= high
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
