"""Dense retrieval: the sentence encoder, an in-process faiss index, and result formatting."""

from ray_distill.tools.retrieval.encoder import Encoder
from ray_distill.tools.retrieval.index import FaissRetriever, Hit, Retriever, format_hits, read_corpus

__all__ = ["Encoder", "FaissRetriever", "Hit", "Retriever", "format_hits", "read_corpus"]
