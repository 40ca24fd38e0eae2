"""Dense retrieval: the sentence encoder (indexes and services build on it)."""

from ray_distill.tools.retrieval.encoder import Encoder

__all__ = ["Encoder"]
