"""Dense retrieval: the sentence encoder, in-process faiss indexes (one, or shards), and result formatting."""

from ray_distill.tools.retrieval.encoder import Encoder
from ray_distill.tools.retrieval.index import FaissRetriever, Hit, Retriever, format_hits, read_corpus
from ray_distill.tools.retrieval.shards import (IndexKind, Shard, ShardedRetriever, build_index, split_corpus,
                                                write_passages, write_shard)

__all__ = ["Encoder", "FaissRetriever", "Hit", "IndexKind", "Retriever", "Shard", "ShardedRetriever", "build_index",
           "format_hits", "read_corpus", "split_corpus", "write_passages", "write_shard"]
