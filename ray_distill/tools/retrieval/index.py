"""In-process dense retrieval: a faiss inner-product index over a corpus.

The corpus is the Wikipedia-2018 format (JSONL lines `{"id", "contents":
"Title\\ntext"}`); passages are embedded with the encoder's passage prefix
and searched with its query prefix. The distributed service plugs into the
same `Retriever` protocol.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from ray_distill.compute import run_compute
from ray_distill.tools.retrieval.encoder import Encoder


@dataclass(frozen=True)
class Hit:
    id: str
    contents: str  # "Title\ntext", as in the corpus
    score: float

    @property
    def title(self) -> str:
        return split_contents(self.contents)[0]

    @property
    def text(self) -> str:
        return split_contents(self.contents)[1]


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]: ...


async def search_async(retriever: Retriever, queries: Sequence[str], k: int) -> list[list[Hit]]:
    """Search from an event loop: a remote retriever's own `asearch`, else on the compute thread
    (an in-process search embeds queries with torch)."""
    if hasattr(retriever, "asearch"):
        return await retriever.asearch(queries, k)
    return await run_compute(retriever.search, queries, k)


def read_corpus(paths: Iterable[str | Path]) -> Iterator[dict]:
    """Passages `{"id", "contents"}` from JSONL, JSONL.gz or Parquet files, streamed in order."""
    for path in map(Path, paths):
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["id", "contents"]):
                for record in batch.to_pylist():
                    yield {"id": str(record["id"]), "contents": record["contents"]}
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                        yield {"id": str(record["id"]), "contents": record["contents"]}
                    except (ValueError, KeyError, TypeError) as e:
                        raise ValueError(f"{path}:{number}: not a corpus record {{'id', 'contents'}}: {e}") from None


def split_contents(contents: str) -> tuple[str, str]:
    title, _, text = contents.partition("\n")
    return title, text


class FaissRetriever:
    def __init__(self, encoder: Encoder, ids: list[str], contents: list[str], vectors: np.ndarray):
        import faiss

        self.encoder = encoder
        self.ids = ids
        self.contents = contents
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_corpus(cls, paths: Iterable[str | Path], encoder: Encoder) -> "FaissRetriever":
        records = list(read_corpus(paths))
        contents = [r["contents"] for r in records]
        vectors = encoder.encode_passages(contents)
        return cls(encoder, [str(r["id"]) for r in records], contents, vectors)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        if not queries:
            return []
        scores, rows = self.index.search(self.encoder.encode_queries(list(queries)), min(k, len(self.ids)))
        results = []
        for score_row, index_row in zip(scores, rows):
            hits = []
            for score, i in zip(score_row, index_row):
                if i < 0:
                    continue
                hits.append(Hit(self.ids[i], self.contents[i], float(score)))
            results.append(hits)
        return results


def format_hits(hits: Sequence[Hit]) -> str:
    """What `web_search` returns to the agent: numbered documents with scores."""
    if not hits:
        return "No documents found."
    return "\n".join(f"Doc {n} (Title: {h.title}) score={h.score:.2f}\n{h.text}" for n, h in enumerate(hits, 1))
