"""Index shards: exact merged top-k for Flat, measured recall for the approximate kinds, checked manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ray_distill.data.world import write_world
from ray_distill.tools.retrieval import Encoder, FaissRetriever
from ray_distill.tools.retrieval.index import read_corpus
from ray_distill.tools.retrieval.shards import IndexKind, Shard, ShardedRetriever, build_index, merge_top_k, split_corpus

from conftest import write_shards

# Recall@3 against Flat that each approximate kind must reach on the world corpus.
RECALL_AT_3 = {
    IndexKind("ivf_flat", nlist=16, nprobe=8): 0.85,
    IndexKind("ivf_pq", nlist=16, nprobe=8, pq_m=48, pq_bits=6): 0.6,
    IndexKind("hnsw", hnsw_m=16, ef_search=64): 0.95,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A generated world: passages, their embeddings, and its questions as queries."""
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=3, num_passages=800, num_fact_questions=40, num_math_questions=0,
                test_fraction=0.0, progress=False)
    records = list(read_corpus(sorted((out / "corpus").glob("*.jsonl"))))
    encoder = Encoder("minilm-l6", device="cpu")
    vectors = encoder.encode_passages([r["contents"] for r in records])
    questions = [q["question"] for q in json.loads((out / "questions" / "fact_train.json").read_text())["examples"]]
    return records, encoder, vectors, questions


def faiss_has_gpus() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@pytest.mark.slow
def test_sharded_flat_equals_one_flat_index_and_brute_force(corpus, tmp_path):
    records, encoder, vectors, questions = corpus
    sharded = ShardedRetriever.load(write_shards(tmp_path, records, vectors, IndexKind("flat"), 3), encoder)
    single = FaissRetriever(encoder, [str(r["id"]) for r in records], [r["contents"] for r in records], vectors)
    scores = encoder.encode_queries(questions) @ vectors.T
    for question, got, expected, row in zip(questions, sharded.search(questions, k=3), single.search(questions, k=3), scores):
        assert [h.id for h in got] == [h.id for h in expected], question
        assert [h.id for h in got] == [str(records[i]["id"]) for i in np.argsort(-row, kind="stable")[:3]]
        np.testing.assert_allclose([h.score for h in got], np.sort(row)[::-1][:3], rtol=1e-4)
        assert (got[0].title, got[0].text) == (expected[0].title, expected[0].text)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RECALL_AT_3), ids=lambda k: k.kind)
def test_approximate_kinds_reach_their_recall(corpus, tmp_path, kind):
    records, encoder, vectors, questions = corpus
    exact = ShardedRetriever.load(write_shards(tmp_path / "flat", records, vectors, IndexKind("flat"), 2), encoder)
    approximate = ShardedRetriever.load(write_shards(tmp_path / kind.kind, records, vectors, kind, 2), encoder)
    truth = [{h.id for h in hits} for hits in exact.search(questions, k=3)]
    found = [{h.id for h in hits} for hits in approximate.search(questions, k=3)]
    recall = sum(len(t & f) for t, f in zip(truth, found)) / sum(len(t) for t in truth)
    print(f"{kind.factory()}: recall@3 {recall:.3f} against Flat")
    assert recall >= RECALL_AT_3[kind]


@pytest.mark.slow
def test_a_shard_refuses_another_embedder_and_a_changed_index(corpus, tmp_path):
    records, _, vectors, _ = corpus
    (directory,) = write_shards(tmp_path, records[:50], vectors[:50], IndexKind("flat"), 1)
    with pytest.raises(ValueError, match="built with embedder 'minilm-l6'.*'e5-base-v2'"):
        Shard.load(directory, "e5-base-v2")
    data = bytearray((directory / "index.faiss").read_bytes())
    data[-1] ^= 0xFF
    (directory / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        Shard.load(directory, "minilm-l6")
    data[-1] ^= 0xFF
    (directory / "index.faiss").write_bytes(bytes(data))
    if not faiss_has_gpus():
        with pytest.raises(RuntimeError, match="needs faiss with GPU support"):
            Shard.load(directory, "minilm-l6").to_gpu()
    (directory / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete index shard"):
        Shard.load(directory, "minilm-l6")


def test_search_settings_are_not_build_settings():
    assert IndexKind("ivf_flat", nprobe=1).built_as() == IndexKind("ivf_flat", nprobe=64).built_as()
    assert IndexKind("hnsw", ef_search=16).built_as() == IndexKind("hnsw", ef_search=512).built_as()
    assert IndexKind("ivf_flat", nlist=8).built_as() != IndexKind("ivf_flat", nlist=16).built_as()


@pytest.mark.slow
def test_bad_index_settings_are_explained(corpus):
    _, _, vectors, _ = corpus
    with pytest.raises(ValueError, match="nlist=1024 needs at least that many passages"):
        build_index(vectors[:100], IndexKind("ivf_flat"))
    with pytest.raises(ValueError, match="pq_m=50 must divide"):
        build_index(vectors, IndexKind("ivf_pq", nlist=8, pq_m=50))
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexKind("annoy")


def test_merge_keeps_the_best_k_across_shards_and_skips_missing_rows():
    first = (np.array([[0.9, 0.5]], dtype=np.float32), np.array([[4, 7]]))
    second = (np.array([[0.7, 0.0]], dtype=np.float32), np.array([[1, -1]]))  # a shard with one passage
    scores, shards, rows = merge_top_k([first, second], 3)
    assert scores.tolist() == [[pytest.approx(0.9), pytest.approx(0.7), pytest.approx(0.5)]]
    assert shards.tolist() == [[0, 1, 0]] and rows.tolist() == [[4, 1, 7]]


def test_splitting_a_corpus_streams_it_into_shards(tmp_path):
    import tracemalloc

    import pyarrow.parquet as pq

    def corpus(n):
        return ({"id": str(i), "contents": f"Title {i}\n" + "word " * 80} for i in range(n))

    def split(n, out):
        tracemalloc.start()
        directories = split_corpus(corpus(n), out, 10_000)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return directories, peak

    _, small = split(10_000, tmp_path / "small")
    directories, large = split(60_000, tmp_path / "large")
    assert [pq.ParquetFile(d / "passages.parquet").metadata.num_rows for d in directories] == [10_000] * 6
    assert pq.read_table(directories[-1] / "passages.parquet").column("id")[-1].as_py() == "59999"
    assert large < 1.5 * small + 512 * 1024, (small, large)  # memory holds a row group, not the corpus
