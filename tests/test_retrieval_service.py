"""The retrieval service: shard actors behind batching routers on a local Ray, and the HTTP API."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from ray_distill.data.world import write_world
from ray_distill.tools.retrieval import Encoder, IndexKind, ShardedRetriever, read_corpus
from ray_distill.tools.retrieval.http import HttpRetriever, make_app

from conftest import write_shards

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two Flat shards over a generated world corpus, and a few questions to ask."""
    out = tmp_path_factory.mktemp("service")
    write_world(out, seed=5, num_passages=300, num_fact_questions=12, num_math_questions=0, test_fraction=0.0,
                progress=False)
    records = list(read_corpus(sorted((out / "corpus").glob("*.jsonl"))))
    encoder = Encoder("minilm-l6", device="cpu")
    vectors = encoder.encode_passages([r["contents"] for r in records])
    directories = write_shards(out, records, vectors, IndexKind("flat"), 2)
    questions = ["Who founded the shipping company?", "a city beside a lake", "population of the capital",
                 "when was the bridge built", "the river that flows through the town"]
    return directories, ShardedRetriever.load(directories, encoder), questions


def found_flat(found):
    return [hits for per_call in found for hits in per_call]


def as_tuples(found):
    # Scores are left out: a query's vector can differ in its last bits with the batch it was embedded in.
    return [[(h.id, h.contents) for h in hits] for hits in found]


def test_service_answers_like_the_in_process_shards_and_batches_concurrent_callers(local_ray, shards):
    import ray

    from ray_distill.distributed.retrieval import RetrievalClient, _hits

    directories, local, questions = shards
    client = RetrievalClient.launch(directories, "minilm-l6", replicas=2, router_options={"num_cpus": 0})
    try:
        assert [s["passages"] for s in client.stats[0]] == [150, 150]
        expected = as_tuples(local.search(questions, k=3))
        assert as_tuples(client.search(questions, k=3)) == expected
        assert as_tuples(client.search(questions[:2], k=1)) == [hits[:1] for hits in expected[:2]]

        def batches():
            return sum(ray.get(r.__ray_call__.remote(lambda router: router.batches)) for r in client.routers)

        async def one_query_per_call(queries):
            return await asyncio.gather(*(client.asearch([q], 3) for q in queries))

        variants = [f"{q} (asked by caller {n})" for n in range(4) for q in questions]
        before = batches()
        found = asyncio.run(one_query_per_call(variants))
        assert [as_tuples(f)[0] for f in found] == as_tuples(local.search(variants, k=3))
        assert batches() - before < len(variants) / 2  # concurrent callers shared batches
        router = client.routers[0]
        ray.get(router.search.remote(variants, 3))
        before = batches()
        assert as_tuples(_hits(ray.get(router.search.remote(variants, 3)))) == as_tuples(found_flat(found))
        assert batches() == before  # answered from the router's cache
    finally:
        client.close()


def test_a_killed_shard_restarts_and_one_that_cannot_is_a_clear_error(local_ray, shards):
    import ray

    from ray_distill.distributed.retrieval import RetrievalClient

    directories, local, questions = shards
    client = RetrievalClient.launch(directories, "minilm-l6", router_options={"num_cpus": 0})
    try:
        (router,) = client.routers
        victim = ray.get(router.shard_actors.remote())[1]
        ray.kill(victim, no_restart=False)  # it comes back; the search waits for it
        assert as_tuples(client.search(questions[:3], k=3)) == as_tuples(local.search(questions[:3], k=3))
        ray.kill(victim, no_restart=True)
        with pytest.raises(Exception, match="retrieval shard 1 .* is unavailable"):
            client.search(["a question nobody asked yet"], k=3)
    finally:
        client.close()


def test_http_speaks_the_search_r1_api_and_rejects_bad_requests(shards):
    directories, local, questions = shards

    async def go():
        from aiohttp import web

        runner = web.AppRunner(make_app(local, default_topk=2))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                scored = (await http.post("/retrieve", json={"queries": questions[:2], "topk": 3,
                                                             "return_scores": True})).json()
                plain = (await http.post("/retrieve", json={"queries": questions[:2]})).json()
                bad = [await http.post("/retrieve", content=b"{not json"),
                       await http.post("/retrieve", json={"topk": 3}),
                       await http.post("/retrieve", json={"queries": ["x"], "topk": 0}),
                       await http.post("/retrieve", json={"queries": ["x"], "topk": "3"}),
                       await http.post("/retrieve", json={"queries": ["x"], "return_scores": "yes"}),
                       await http.post("/retrieve", json={"queries": ["x"], "k": 3})]
                alive = await http.post("/retrieve", json={"queries": ["x"]})
            remote = await HttpRetriever(f"http://127.0.0.1:{port}/retrieve").asearch(questions[:2], 3)
            return scored, plain, bad, alive, remote
        finally:
            await runner.cleanup()

    scored, plain, bad, alive, remote = asyncio.run(go())
    expected = local.search(questions[:2], k=3)
    assert list(scored) == ["result"] and len(scored["result"]) == 2
    for got, hits in zip(scored["result"], expected):
        assert [set(d) for d in got] == [{"document", "score"}] * 3
        assert [d["document"] for d in got] == [{"id": h.id, "contents": h.contents} for h in hits]
        np.testing.assert_allclose([d["score"] for d in got], [h.score for h in hits], rtol=1e-5)
    assert plain["result"] == [[{"id": h.id, "contents": h.contents} for h in hits[:2]] for hits in expected]
    assert [r.status_code for r in bad] == [400] * 6
    assert all(isinstance(r.json()["error"], str) for r in bad)
    assert "not JSON" in bad[0].json()["error"] and "unknown field" in bad[5].json()["error"]
    assert alive.status_code == 200
    assert remote == expected  # the client side of the same API gives back the same hits
