"""Micro-batching: concurrent callers share batches, bounded by weight, failures reach every caller."""

from __future__ import annotations

import asyncio

from ray_distill.batching import MicroBatcher


def test_concurrent_callers_share_batches_within_the_weight_bound():
    seen = []

    async def process(items):
        seen.append(list(items))
        await asyncio.sleep(0.01)
        return [sum(item) for item in items]

    batcher = MicroBatcher(process, max_batch=5, weight=len, in_flight=1)

    async def go():
        return await asyncio.gather(*(batcher.submit([n, n]) for n in range(6)))

    assert asyncio.run(go()) == [2 * n for n in range(6)]
    # six items of weight 2 in batches of weight <= 5: three batches of two
    assert seen == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4], [5, 5]]] and batcher.batches == 3


def test_a_failed_batch_fails_each_caller_and_the_batcher_goes_on():
    async def process(items):
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    batcher = MicroBatcher(process, max_batch=10, in_flight=1)

    async def go():
        failed = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)
        return failed, await batcher.submit("good")

    (error,), good = asyncio.run(go())
    assert isinstance(error, RuntimeError) and good == "good"
    assert asyncio.run(batcher.submit("again")) == "again"  # works from a new event loop too
