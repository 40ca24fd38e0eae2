"""The index stage (split, embed with Ray Data, build) and `ray-distill serve-retrieval`."""

from __future__ import annotations

import gzip
import json
import shutil
import time

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_distill.config import load_config
from ray_distill.errors import DataError, UserError
from ray_distill.stages.services import open_retriever
from ray_distill.stages.pipeline import run_pipeline
from ray_distill.tools.retrieval import Encoder, ShardedRetriever, read_corpus

from conftest import REPO, serving_retrieval

# Two shards, the second shorter: on 2 cores a shard's encoder takes ~10 s to start and a passage ~45 ms.
SMALL = ["world.num_passages=300", "world.num_fact_questions=12", "world.num_math_questions=4",
         "index.passages_per_shard=200"]


def config(run_dir, *extra):
    return load_config(REPO / "experiments/quickstart.yaml", [f"run.dir={run_dir}", "run.stages=[world,index]", *SMALL, *extra])


def summary(manifest):
    return manifest["stages"]["index"]["summary"]


def test_corpus_files_are_read_alike_from_jsonl_gzip_and_parquet(tmp_path):
    records = [{"id": "1", "contents": "Rome\nA city."}, {"id": "2", "contents": "Nile\nA river."}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    pq.write_table(pa.table({"id": [1, 2], "contents": [r["contents"] for r in records]}), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.parquet"):
        assert list(read_corpus([tmp_path / name])) == records
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{\"id\": 3}\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: missing field 'contents'"):
        list(read_corpus([tmp_path / "bad.jsonl"]))


@pytest.mark.slow
def test_index_stage_shards_embeds_and_builds_resumably(local_ray, tmp_path):
    # A node type's resource that this machine's Ray lacks would leave the encoders waiting forever.
    with pytest.raises(UserError, match=r"index.resources asks for the Ray resource\(s\) cpu_node, which this"):
        run_pipeline(config(tmp_path, "index.resources={cpu_node: 0.5}"), progress=False)
    first = run_pipeline(config(tmp_path), progress=False)
    done = summary(first)
    assert (done["shards"], done["passages"], done["embedded_shards"], done["built_shards"]) == (2, 300, 2, 2)
    shards = sorted((tmp_path / "index").glob("shard-*"))
    encoder = Encoder("minilm-l6", device="cpu")
    sharded = ShardedRetriever.load(shards, encoder)
    # Exact top-k over every passage, from the embeddings the stage stored.
    vectors = np.concatenate([np.load(d / "embeddings.npy") for d in shards])
    ids = [r["id"] for r in read_corpus(sorted((tmp_path / "world" / "corpus").glob("*.jsonl")))]
    queries = ["a city beside a lake", "who founded the company", "the tallest mountain"]
    scores = encoder.encode_queries(queries) @ vectors.T
    assert [[h.id for h in hits] for hits in sharded.search(queries, 3)] == \
           [[ids[i] for i in np.argsort(-row, kind="stable")[:3]] for row in scores]

    # Another index kind reuses the embeddings; a shard whose embeddings are gone is embedded again.
    (shards[1] / "embeddings.npy").unlink()
    again = summary(run_pipeline(config(tmp_path, "index.kind=hnsw"), progress=False))
    assert (again["embedded_shards"], again["built_shards"], again["kind"]) == (1, 2, "HNSW32,Flat")
    assert ShardedRetriever.load(shards, encoder).shards[0].manifest.kind.kind == "hnsw"
    # with the index built, the agent searches its shards
    assert isinstance(open_retriever(config(tmp_path, "index.kind=hnsw")), ShardedRetriever)


@pytest.mark.slow
def test_serve_retrieval_answers_over_http_until_stopped(small_world, tmp_path):
    shutil.copytree(small_world / "index", tmp_path / "index")  # the session's: 200 passages in two shards
    with serving_retrieval(tmp_path, "retrieval.topk=2") as (port, banner, _):
        assert "serving 200 passages from 2 shard(s)" in banner
        deadline = time.time() + 30
        while True:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={"queries": ["a city beside a lake"]})
                break
            except httpx.ConnectError:
                assert time.time() < deadline
                time.sleep(0.2)
        assert answer.status_code == 200
        (hits,) = answer.json()["result"]
        assert len(hits) == 2 and set(hits[0]) == {"id", "contents"}
        # the agent's web_search, pointed at the endpoint by config
        agent_side = open_retriever(config(tmp_path, f"retrieval.url=http://127.0.0.1:{port}/retrieve"))
        (found,) = agent_side.search(["a city beside a lake"], 2)
        assert [h.id for h in found] == [h["id"] for h in hits]
