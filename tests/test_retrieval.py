from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from ray_distill.agent import retrieval_tools
from ray_distill.data.world import write_world
from ray_distill.tools.retrieval import Encoder, FaissRetriever, Hit, format_hits


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=1, num_passages=300, num_fact_questions=40, num_math_questions=0,
                test_fraction=0.0, progress=False)
    return out


@pytest.fixture(scope="module")
def retriever(world):
    return FaissRetriever.from_corpus(sorted((world / "corpus").glob("*.jsonl")), Encoder("minilm-l6", device="cpu"))


@pytest.mark.slow  # the embedded embedder
def test_search_equals_brute_force(retriever):
    queries = ["Who founded the shipping company?", "a city beside a lake", "population of the capital"]
    hits = retriever.search(queries, k=5)
    passages = retriever.encoder.encode_passages(retriever.contents)
    scores = retriever.encoder.encode_queries(queries) @ passages.T
    for row, got in zip(scores, hits):
        expected = np.argsort(-row)[:5]
        assert [h.id for h in got] == [retriever.ids[i] for i in expected]
        np.testing.assert_allclose([h.score for h in got], row[expected], rtol=1e-4)


@pytest.mark.slow  # the embedded embedder
def test_the_first_hop_of_world_questions_is_retrieved(world, retriever):
    questions = json.loads((world / "questions" / "fact_train.json").read_text())["examples"]
    bridge = [q for q in questions if not q["type"].startswith("comparison")]
    found = 0
    for q in bridge:
        (hits,) = retriever.search([q["hops"][0]["title"]], k=3)
        found += q["hops"][0]["title"] in {h.title for h in hits}
    assert found / len(bridge) >= 0.9


@pytest.mark.slow  # the embedded embedder
def test_web_search_tool_formats_numbered_documents(retriever):
    toolbox = retrieval_tools(retriever, k=3)
    assert toolbox.names == ("web_search",)
    tool = toolbox.handler
    text = asyncio.run(tool("web_search", [], {"query": "city population"}))
    lines = text.splitlines()
    assert lines[0].startswith("Doc 1 (Title: ") and " score=" in lines[0]
    assert sum(line.startswith("Doc ") for line in lines) == 3
    assert asyncio.run(tool("web_search", ["city population"], {})) == text
    with pytest.raises(ValueError, match="non-empty query"):
        asyncio.run(tool("web_search", [""], {}))
    with pytest.raises(ValueError, match="unknown tool"):
        asyncio.run(tool("wikipedia", ["x"], {}))


def test_format_hits():
    assert format_hits([]) == "No documents found."
    assert format_hits([Hit("7", "Rome\nRome is a city.", 0.8123)]) == "Doc 1 (Title: Rome) score=0.81\nRome is a city."
