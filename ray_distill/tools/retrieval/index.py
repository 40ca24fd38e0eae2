"""In-process dense retrieval: a faiss inner-product index over a corpus.

The corpus is the Wikipedia-2018 format (JSONL lines `{"id", "contents":
"Title\\ntext"}`); passages are embedded with the encoder's passage prefix
and searched with its query prefix. The distributed service plugs into the
same `Retriever` protocol.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from ray_distill.compute import run_compute
from ray_distill.errors import DataError, brief, first_line
from ray_distill.fileio import json_lines, record_id
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
    """Passages `{"id", "contents"}` from JSONL, JSONL.gz or Parquet files, streamed in order. A malformed
    record is a DataError naming its file and line (or Parquet record); so is an id seen twice, found once
    every passage has been read."""
    paths = [Path(p) for p in paths]
    hashes = array("q")
    for path in paths:
        for _, record in _corpus_records(path):
            hashes.append(hash(record["id"]))
            yield record
    _refuse_duplicate_ids(paths, hashes)


def _corpus_records(path: Path) -> Iterator[tuple[str, dict]]:
    if path.suffix == ".parquet":
        for n, record in enumerate(_parquet_rows(path)):
            yield f"record {n}", _passage(record, f"{path}: record {n}")
    else:
        for line, record in json_lines(path):
            yield f"line {line}", _passage(record, f"{path}: line {line}")


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq  # local: ray_distill.config imports this package; the fast commands skip pyarrow

    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["id", "contents"]):
            yield from batch.to_pylist()
    except Exception as e:  # pyarrow raises several types for a bad file or a missing column
        raise DataError(f"{path}: not a readable Parquet corpus {{'id', 'contents'}}: {first_line(e)}") from None


def _passage(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object {{'id', 'contents'}}, got {type(record).__name__}")
    for key in ("id", "contents"):
        if key not in record:
            raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(record["contents"], str):
        raise DataError(f"{where}: 'contents' must be a string, got {brief(record['contents'])}")
    return {"id": record_id(record["id"], where), "contents": record["contents"]}


def _refuse_duplicate_ids(paths: list[Path], hashes: array) -> None:
    """Ids are kept as 8-byte hashes while the corpus streams by (Wikipedia's 21M take 170 MB); only ids
    whose hashes meet are looked for in a second read."""
    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not suspects:
        return
    first: dict[str, str] = {}
    for path in paths:
        for where, record in _corpus_records(path):
            if hash(record["id"]) in suspects:
                if record["id"] in first:
                    raise DataError(f"{path}: {where}: duplicate id {brief(record['id'])} "
                                    f"(first at {first[record['id']]})")
                first[record["id"]] = f"{path}: {where}"


def split_contents(contents: str) -> tuple[str, str]:
    title, _, text = contents.partition("\n")
    return title, text


class FaissRetriever:
    def __init__(self, encoder: Encoder, ids: list[str], contents: list[str], vectors: np.ndarray):
        import faiss  # local: absent on the GPU bench machine, where ray_distill.config imports this package

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
