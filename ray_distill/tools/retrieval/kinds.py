"""The kinds of faiss index a shard can be, and their settings: what the config validates against,
apart from the code that builds and searches them (which needs faiss)."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")


@dataclass(frozen=True)
class IndexKind:
    """What faiss index a shard is, and its search-time settings."""

    kind: str = "flat"
    nlist: int = 1024  # IVF cells
    pq_m: int = 64  # IVF-PQ sub-quantizers (must divide the dimension)
    pq_bits: int = 8
    hnsw_m: int = 32  # HNSW neighbours per node
    nprobe: int = 32  # IVF cells visited per query
    ef_search: int = 128  # HNSW candidate list per query

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; known: {', '.join(KINDS)}")

    def built_as(self) -> tuple:
        """The settings the index's contents depend on (nprobe and ef_search apply at search time)."""
        return {"flat": ("flat",), "ivf_flat": ("ivf_flat", self.nlist), "ivf_pq": ("ivf_pq", self.nlist, self.pq_m, self.pq_bits),
                "hnsw": ("hnsw", self.hnsw_m)}[self.kind]

    def factory(self) -> str:
        return {"flat": "Flat", "ivf_flat": f"IVF{self.nlist},Flat", "ivf_pq": f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}",
                "hnsw": f"HNSW{self.hnsw_m},Flat"}[self.kind]
