"""The hf engine's prefix cache: blocks that share their parents' tokens, bounded by what they hold."""

from __future__ import annotations

import torch

from ray_distill.engines.prefix_cache import KVBlock, PrefixCache


def block(tokens, parent=None):
    """A one-layer block whose keys are the token ids themselves (values their negatives)."""
    own = torch.tensor(tokens[len(parent.tokens) if parent else 0:], dtype=torch.float32).view(1, 1, -1, 1)
    return KVBlock(tuple(tokens), parent, [own], [-own])


def test_span_reads_across_parents():
    root = block([1, 2, 3])
    child = block([1, 2, 3, 4, 5], root)
    grandchild = block([1, 2, 3, 4, 5, 6], child)
    keys, values = grandchild.span(0, 1, 6)
    assert keys.flatten().tolist() == [2, 3, 4, 5, 6] and values.flatten().tolist() == [-2, -3, -4, -5, -6]
    assert grandchild.span(0, 3, 5)[0].flatten().tolist() == [4, 5]


def test_longest_prefix_within_a_limit():
    cache = PrefixCache(max_tokens=100)
    root = block([1, 2, 3])
    cache.add(root)
    cache.add(block([1, 2, 3, 4, 5], root))
    assert len(cache.longest([1, 2, 3, 4, 5, 6], limit=6).tokens) == 5
    assert len(cache.longest([1, 2, 3, 4, 5, 6], limit=4).tokens) == 4  # split off the longer block
    assert cache.longest([5, 2, 9], limit=3) is None


def test_eviction_counts_only_own_tokens_and_drops_the_least_recently_used():
    cache = PrefixCache(max_tokens=6)
    root = block([1, 2, 3])
    cache.add(root)
    a = block([1, 2, 3, 4, 5], root)
    cache.add(a)  # holds 3 + 2 tokens
    assert cache.longest([1, 2, 3, 4, 5, 6], 6) is a
    cache.add(block([7, 8]))  # 7 > 6: the least recently used goes, and a used block's parent outlives it
    assert cache.longest([1, 2, 3, 4, 5], 5) is root
    assert cache.longest([7, 8], 2) is not None
    cache.add(block(list(range(10, 20))))  # larger than the whole cache: not kept
    assert cache.longest(list(range(10, 20)), 10) is None


def test_a_prefix_ending_inside_a_block_splits_it():
    cache = PrefixCache(max_tokens=100)
    episode = block([1, 2, 3, 4, 5, 6])
    cache.add(episode)
    shared = cache.longest([1, 2, 3, 4, 9, 9], limit=6)  # another prompt: same first four tokens
    assert shared.tokens == (1, 2, 3, 4) and shared.span(0, 0, 4)[0].flatten().tolist() == [1, 2, 3, 4]
    assert episode.parent is shared and episode.span(0, 0, 6)[0].flatten().tolist() == [1, 2, 3, 4, 5, 6]
    assert cache.longest([1, 2, 3, 4, 7], limit=5) is shared  # the head is a block of its own now
    assert cache.longest([1, 2, 8], limit=3) is not None and PrefixCache(100, min_match=3).longest([1, 2, 8], 3) is None


def test_an_episode_chain_is_evicted_newest_first_so_every_held_token_is_counted():
    cache = PrefixCache(max_tokens=6)
    root = block([1, 2, 3])
    cache.add(root)
    child = block([1, 2, 3, 4, 5], root)
    cache.add(child)
    cache.add(block([1, 2, 3, 4, 5, 6], child))
    cache.add(block([9, 9]))  # 8 tokens held: the chain's newest blocks go first
    assert cache.longest([1, 2, 3, 4, 5, 6, 7], 7) is root
    assert cache._held == sum(len(b.tokens) - b.start for b in cache._blocks.values()) <= 6
