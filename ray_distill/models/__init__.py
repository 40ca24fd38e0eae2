"""Resolve model and embedder names to local files (embedded, local path or hub id)."""

from ray_distill.models.resolve import EMBEDDED_MODELS, EMBEDDERS, EmbedderSpec, embedder_prefixes, resolve_embedder, resolve_model

__all__ = ["EMBEDDED_MODELS", "EMBEDDERS", "EmbedderSpec", "embedder_prefixes", "resolve_embedder", "resolve_model"]
