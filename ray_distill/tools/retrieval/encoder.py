"""Sentence encoder for queries and passages, with the model's own prefixes.

Embeddings are L2-normalised float32, so inner product is cosine similarity
(what the paper's e5 + flat inner-product index uses). The model runs in
bfloat16 where the hardware has it (see `compute.default_dtype`), where a
vector can differ in its last bits with the batch it was computed in.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ray_distill.compute import default_dtype
from ray_distill.models import EmbedderSpec, resolve_embedder


class Encoder:
    def __init__(self, embedder: str | EmbedderSpec, device: Optional[str] = None, batch_size: int = 64,
                 dtype: Optional[str] = None):
        # local: ray_distill.config imports this package (for the index kinds), and the fast commands
        # load neither torch nor sentence-transformers
        import torch
        from sentence_transformers import SentenceTransformer

        self.spec = embedder if isinstance(embedder, EmbedderSpec) else resolve_embedder(embedder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(str(self.spec.path), device=device, local_files_only=True,
                                         model_kwargs={"dtype": getattr(torch, dtype) if dtype else default_dtype(device)})
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._encode([self.spec.query_prefix + q for q in queries])

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray:
        return self._encode([self.spec.passage_prefix + p for p in passages])

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                               show_progress_bar=False), dtype=np.float32)
        # Normalised in float32: a bfloat16 model's own normalisation leaves norms ~1e-2 off.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
