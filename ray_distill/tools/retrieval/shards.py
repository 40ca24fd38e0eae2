"""Index shards: a faiss index over one slice of the corpus, its passages, and a manifest.

A shard directory holds `index.faiss`, `passages.parquet` (id, contents, in
index order) and `manifest.json`: embedder, dimension, metric, index kind
and parameters, passage count and the index file's checksum. Loading checks
all of them, so an index built with one embedder cannot answer another's
queries, and a truncated or swapped file is an error rather than wrong hits.
Shards search independently; `search_shards` merges their top-k, which for
Flat shards equals one Flat index over the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ray_distill.fileio import write_json_atomic
from ray_distill.tools.retrieval.index import Hit
from ray_distill.tools.retrieval.kinds import IndexKind

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.parquet"

# faiss and pyarrow are imported in the functions that use them: ray_distill.config imports this package (for
# the index kinds), the fast commands skip pyarrow, and faiss is absent on the GPU bench machine.


@dataclass(frozen=True)
class ShardManifest:
    embedder: str
    dimension: int
    kind: IndexKind
    passages: int
    checksum: str  # sha256 of index.faiss
    metric: str = "inner_product"
    shard: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> "ShardManifest":
        data = json.loads((directory / MANIFEST).read_text())
        return cls(**{**data, "kind": IndexKind(**data["kind"])})


def build_index(vectors: np.ndarray, kind: IndexKind):
    """A trained faiss index of `kind` holding `vectors` (unit-norm float32, one row per passage)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dimension = vectors.shape
    if kind.kind in ("ivf_flat", "ivf_pq") and count < kind.nlist:
        raise ValueError(f"an {kind.kind} index with nlist={kind.nlist} needs at least that many passages "
                         f"per shard; this shard has {count} (lower nlist or use fewer shards)")
    if kind.kind == "ivf_pq" and dimension % kind.pq_m:
        raise ValueError(f"pq_m={kind.pq_m} must divide the embedding dimension {dimension}")
    index = faiss.index_factory(dimension, kind.factory(), faiss.METRIC_INNER_PRODUCT)
    if kind.kind == "ivf_pq":  # polysemous codes serve only Hamming-filtered search, which is never set;
        # training them took 13 s of a 400-vector shard's 13.5 s on 2 cores, for the same search results
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    _set_search_parameters(index, kind)
    return index


def _set_search_parameters(index, kind: IndexKind) -> None:
    import faiss

    if kind.kind.startswith("ivf"):
        faiss.extract_index_ivf(index).nprobe = kind.nprobe
    elif kind.kind == "hnsw":
        index.hnsw.efSearch = kind.ef_search


def write_passages(directory: Path, ids: Sequence[str], contents: Sequence[str]) -> None:
    """A shard's passages, in the order their vectors go into its index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(ids) != len(contents):
        raise ValueError(f"{len(ids)} ids but {len(contents)} passages")
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(i) for i in ids], "contents": list(contents)}), directory / PASSAGES_FILE)


def split_corpus(records: Iterable[dict], out_dir: Path, passages_per_shard: int, progress=None) -> list[Path]:
    """Stream a corpus into shard directories of `passages_per_shard` passages each
    (`passages.parquet`); memory holds one row group, not the corpus. `progress(n)` is
    called as passages are read. Returns the shard directories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if passages_per_shard < 1:
        raise ValueError(f"passages_per_shard must be >= 1, got {passages_per_shard}")
    schema = pa.schema([("id", pa.string()), ("contents", pa.string())])
    directories: list[Path] = []
    writer, in_shard, ids, contents = None, 0, [], []

    def flush() -> None:
        if ids:
            writer.write_table(pa.table({"id": ids, "contents": contents}, schema=schema))
            if progress:
                progress(len(ids))
            ids.clear()
            contents.clear()

    def close() -> None:
        flush()
        writer.close()
        (directories[-1] / (PASSAGES_FILE + ".tmp")).rename(directories[-1] / PASSAGES_FILE)

    try:
        for record in records:
            if writer is None or in_shard == passages_per_shard:
                if writer is not None:
                    close()
                directories.append(out_dir / f"shard-{len(directories):05d}")
                directories[-1].mkdir(parents=True, exist_ok=True)
                writer, in_shard = pq.ParquetWriter(directories[-1] / (PASSAGES_FILE + ".tmp"), schema), 0
            ids.append(record["id"])
            contents.append(record["contents"])
            in_shard += 1
            if len(ids) == 8192:
                flush()
    except BaseException:  # a malformed corpus: no half-written shard is left open or on disk
        if writer is not None:
            writer.close()
            (directories[-1] / (PASSAGES_FILE + ".tmp")).unlink(missing_ok=True)
        raise
    if writer is None:
        raise ValueError("the corpus has no passages")
    close()
    return directories


def write_shard(directory: Path, index, embedder: str, kind: IndexKind, shard: int = 0) -> ShardManifest:
    """Save a shard's index next to its passages; the manifest is written last, so a
    directory with one is complete."""
    import faiss
    import pyarrow.parquet as pq

    passages = pq.ParquetFile(directory / PASSAGES_FILE).metadata.num_rows
    if index.ntotal != passages:
        raise ValueError(f"{directory}: the index holds {index.ntotal} vectors for {passages} passages")
    (directory / MANIFEST).unlink(missing_ok=True)
    faiss.write_index(index, str(directory / INDEX_FILE))
    manifest = ShardManifest(embedder=embedder, dimension=index.d, kind=kind, passages=passages,
                             checksum=_sha256(directory / INDEX_FILE), shard=shard)
    write_json_atomic(directory / MANIFEST, asdict(manifest))
    return manifest


@dataclass
class Shard:
    manifest: ShardManifest
    index: object
    ids: list[str]
    contents: list[str]

    @classmethod
    def load(cls, directory: str | Path, embedder: str, verify: bool = True,
             search: Optional[IndexKind] = None) -> "Shard":
        """Load a shard for queries embedded by `embedder`; refuses any mismatch. `search` gives
        search-time settings (nprobe, ef_search) other than the ones it was built with."""
        import faiss
        import pyarrow.parquet as pq

        directory = Path(directory)
        if not (directory / MANIFEST).exists():
            raise FileNotFoundError(f"{directory} is not a complete index shard (no {MANIFEST})")
        manifest = ShardManifest.read(directory)
        if manifest.embedder != embedder:
            raise ValueError(f"the index in {directory} was built with embedder {manifest.embedder!r}; "
                             f"queries embedded with {embedder!r} would find the wrong passages")
        if verify and _sha256(directory / INDEX_FILE) != manifest.checksum:
            raise ValueError(f"{directory / INDEX_FILE} does not match its manifest's checksum (changed or truncated)")
        index = faiss.read_index(str(directory / INDEX_FILE))
        table = pq.read_table(directory / PASSAGES_FILE)
        if index.ntotal != manifest.passages or table.num_rows != manifest.passages:
            raise ValueError(f"{directory}: the manifest says {manifest.passages} passages, the index holds "
                             f"{index.ntotal} and the passage file {table.num_rows}")
        if search is not None and search.built_as() != manifest.kind.built_as():
            raise ValueError(f"{directory} holds a {manifest.kind.factory()} index, not {search.factory()}")
        _set_search_parameters(index, search or manifest.kind)
        return cls(manifest, index, table.column("id").to_pylist(), table.column("contents").to_pylist())

    def to_gpu(self) -> None:
        """Search on this process's first visible GPU (faiss-gpu, the `gpu` extra)."""
        import faiss

        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
            raise RuntimeError("a GPU shard needs faiss with GPU support and a visible GPU; this faiss has "
                               f"{faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0} GPUs "
                               "(install the gpu extra, or set retrieval.shard_gpus=0)")
        self._gpu_resources = faiss.StandardGpuResources()
        self.index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top-k per query; rows index this shard (-1: none)."""
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, self.index.ntotal))


def merge_top_k(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-shard (scores, rows) into the global top-k: (scores, shard numbers, rows), best first.
    Ties go to the lower shard, then the lower row, so results do not depend on timing."""
    scores = np.concatenate([np.pad(s, ((0, 0), (0, k - s.shape[1])), constant_values=-np.inf) for s, _ in results], axis=1)
    rows = np.concatenate([np.pad(r, ((0, 0), (0, k - r.shape[1])), constant_values=-1) for _, r in results], axis=1)
    shards = np.repeat(np.arange(len(results)), k)[None, :].repeat(scores.shape[0], axis=0)
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.lexsort((rows, shards, -scores), axis=1)[:, :k]
    pick = np.take_along_axis
    return pick(scores, order, 1), pick(shards, order, 1), pick(rows, order, 1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardedRetriever:
    """The `Retriever` over shards held in this process: encode once, search every shard, merge."""

    def __init__(self, encoder, shards: Sequence[Shard]):
        if not shards:
            raise ValueError("a sharded retriever needs at least one shard")
        self.encoder = encoder
        self.shards = list(shards)

    @classmethod
    def load(cls, directories: Sequence[str | Path], encoder, search: Optional[IndexKind] = None) -> "ShardedRetriever":
        return cls(encoder, [Shard.load(d, encoder.spec.name, search=search) for d in directories])

    def search(self, queries: Sequence[str], k: int = 3):
        if not queries:
            return []
        vectors = self.encoder.encode_queries(list(queries))
        scores, shards, rows = merge_top_k([shard.search(vectors, k) for shard in self.shards], k)
        results = []
        for score_row, shard_row, index_row in zip(scores, shards, rows):
            hits = []
            for score, s, i in zip(score_row, shard_row, index_row):
                if i >= 0:
                    shard = self.shards[s]
                    hits.append(Hit(shard.ids[i], shard.contents[i], float(score)))
            results.append(hits)
        return results
