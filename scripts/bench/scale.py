"""The corpus pipeline at 10 million passages on this machine: world, split, IVF-PQ build, serving, recall.

    .venv/bin/python scripts/bench/scale.py [--passages 10000000] [--out DIR] [--quick] [--from STEP]

Steps, each in a fresh process so that each has its own peak RSS (the table
prints time, peak RSS and disk per step; scale.json in --out keeps them):
  world       the world stage (`run_pipeline`, run.stages=[world]) writes the corpus
  split       the index stage's own split step cuts it into 2 shards
  embed       the first --real passages (shard 0's first rows) embedded for real with minilm-l6
  synthetic   each shard's `embeddings.npy`, in the index stage's layout: the real rows, and clustered
              synthetic unit vectors (a gaussian mixture around random centroids, fixed seed) for the rest
  build-NNNNN one IVF-PQ shard each: trained on a random sample, vectors added in chunks
  recall      recall@3 of IVF-PQ against exact (Flat) search over the real slice, world questions as queries
  serve       the 2 shards behind `RetrievalClient.launch`, closed-loop clients sending the world's questions;
              QPS, p50/p99, and every actor's RSS sampled through the run
The data steps resume: a rerun skips every step whose figures are recorded and whose output is on disk,
and redoes the first one that is not and all that follow (--from STEP redoes from STEP on).

Embedding 10M passages with MiniLM on 2 CPU cores would take far longer than the rest of the run, so only
the real slice is embedded (in a world of 10M passages, its first 100k are countries and cities). The
synthetic rows are written by this bench, never by a user-facing option, and labelled:
`synthetic.json` beside each shard's embeddings names the real rows and how the rest were made. They
carry no meaning, so serving measures cost (speed, memory), and recall is measured on the real slice
only, with an IVF-PQ index of the same settings scaled to its size (nlist ~ 4*sqrt(vectors), as a
power of two) at the serving nprobe, and at the nprobe that visits the same share of cells as serving.

The index stage's build (`distributed/indexing.py`) hands `build_index` the whole shard, memory-mapped:
faiss then trains on up to 256*nlist of its vectors, copied into memory, and every page of the
embeddings file it reads counts in the process's RSS. The build step here keeps memory bounded instead:
it calls the same `build_index` (same factory string and settings) on a random sample of 64*nlist
vectors, empties the trained index, and adds the shard's vectors in chunks read from the file, then saves
it with the stage's `write_shard`. Serving uses the service's placement of `scripts/bench/retrieval.py`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# Each step runs in a fresh process that imports only what it uses (ray_distill, torch, faiss, Ray are
# imported inside the steps), so its peak RSS is its own and not the sum of everything loaded before.

REPO = Path(__file__).resolve().parents[2]
EMBEDDER = "minilm-l6"
SHARDS = 2
REAL_ROWS = "real-slice.npy"  # shard 0's first rows, embedded for real (also what recall is measured on)
SYNTHETIC = "synthetic.json"
CHUNK = 65_536  # rows read, generated or added at a time (96 MiB of 384-dimension float32)
CLUSTERS = 10_000  # centroids of the synthetic gaussian mixture
NOISE = 1.0  # norm of a synthetic vector's gaussian offset from its unit centroid (cosine to it ~0.7)
TRAIN_PER_CELL = 64  # IVF training vectors per cell (faiss asks for 39 to 256)


def nlist_for(vectors: int) -> int:
    """IVF cells for a shard: ~4*sqrt(vectors), the usual rule, as the nearest power of two."""
    return 2 ** round(math.log2(4 * math.sqrt(vectors)))


# --- the steps, each run in a child process -----------------------------------------------------------

def world_step(overrides: list[str]) -> dict:
    from ray_distill.config import load_config
    from ray_distill.stages.pipeline import run_pipeline

    config = load_config(REPO / "experiments/quickstart.yaml", overrides)
    run_pipeline(config, ["world"], force=True)  # figures are only recorded for a world made in this step
    corpus = Path(config.run.dir) / "world"
    return {"passages": config.world.num_passages, "disk_bytes": disk_bytes(corpus)}


def split_step(overrides: list[str]) -> dict:
    from ray_distill.config import load_config
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.index import _corpus_files, _split  # the stage's own split, resume check included
    from ray_distill.stages.paths import SPLIT, index_dir, shard_dirs

    config = load_config(REPO / "experiments/quickstart.yaml", overrides)
    ctx = StageContext(config, Path(config.run.dir))
    out = index_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPLIT).unlink(missing_ok=True)  # figures are only recorded for a split made in this step
    done = _split(ctx, out, _corpus_files(ctx))
    return {"passages": done["passages"], "shards": done["shards"],
            "disk_bytes": sum(disk_bytes(d / "passages.parquet") for d in shard_dirs(out))}


def embed_step(shard: Path, rows: int) -> dict:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from ray_distill.tools.retrieval import Encoder

    contents: list[str] = []
    for batch in pq.ParquetFile(shard / "passages.parquet").iter_batches(batch_size=8192, columns=["contents"]):
        contents += batch.column(0).to_pylist()[:rows - len(contents)]
        if len(contents) == rows:
            break
    # The index stage's encoding: its default model batch, 16 of them per call (sorted by length inside).
    encoder = Encoder(EMBEDDER)
    step = 16 * encoder.batch_size
    vectors = np.empty((len(contents), encoder.dim), dtype=np.float32)
    start = time.perf_counter()
    for lo in tqdm(range(0, len(contents), step), desc="embed the real slice", unit=f" x {step} passages", mininterval=10):
        vectors[lo:lo + step] = encoder.encode_passages(contents[lo:lo + step])
    seconds = time.perf_counter() - start
    np.save(shard / (REAL_ROWS + ".tmp.npy"), vectors)
    (shard / (REAL_ROWS + ".tmp.npy")).rename(shard / REAL_ROWS)
    return {"passages": len(contents), "passages_per_second": round(len(contents) / seconds, 1)}


def synthetic_step(shards: list[Path], seed: int) -> dict:
    from ray_distill.distributed.indexing import EMBEDDINGS, EMBEDDINGS_INFO, passage_count
    from ray_distill.fileio import write_json_atomic

    real = np.load(shards[0] / REAL_ROWS)
    dimension = real.shape[1]
    centroids = unit(np.random.default_rng([seed, 0]).standard_normal((CLUSTERS, dimension), dtype=np.float32))
    generated, seconds = 0, 0.0
    for n, shard in enumerate(shards):
        count = passage_count(shard)
        first = len(real) if n == 0 else 0
        partial = shard / (EMBEDDINGS + ".tmp")
        # The stage's layout (an .npy of count x dimension float32), written with plain file writes: a
        # writable memory map would count every page written in this process's RSS.
        offset = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(count, dimension)).offset
        rng = np.random.default_rng([seed, 1, n])
        with open(partial, "r+b") as f:
            f.seek(offset)
            if n == 0:
                f.write(real.tobytes())
            for lo in range(first, count, CHUNK):
                start = time.perf_counter()
                size = min(CHUNK, count - lo)
                noise = rng.standard_normal((size, dimension), dtype=np.float32) * np.float32(NOISE / math.sqrt(dimension))
                block = unit(centroids[rng.integers(CLUSTERS, size=size)] + noise)
                seconds += time.perf_counter() - start
                f.write(block.tobytes())
                generated += size
        (shard / EMBEDDINGS_INFO).unlink(missing_ok=True)
        partial.rename(shard / EMBEDDINGS)
        write_json_atomic(shard / SYNTHETIC, {
            "note": "rows outside real_rows are synthetic clustered unit vectors written by scripts/bench/scale.py, "
                    "not embeddings of their passages",
            "real_rows": [0, first], "synthetic_rows": [first, count], "seed": seed, "clusters": CLUSTERS,
            "noise": NOISE})
        # What the index stage reads to call a shard embedded; the real rows are this embedder's.
        write_json_atomic(shard / EMBEDDINGS_INFO, {"embedder": EMBEDDER, "dimension": dimension, "count": count})
    return {"real_vectors": len(real), "synthetic_vectors": generated,
            "synthetic_vectors_per_second": round(generated / seconds),
            "disk_bytes": sum(disk_bytes(s / EMBEDDINGS) for s in shards)}


def build_step(shard: Path, number: int, kind, seed: int) -> dict:
    from ray_distill.distributed.indexing import EMBEDDINGS
    from ray_distill.tools.retrieval import build_index, write_shard

    count, dimension, offset = npy_layout(shard / EMBEDDINGS)
    train = min(count, TRAIN_PER_CELL * kind.nlist)
    picked = np.zeros(count, dtype=bool)
    picked[np.random.default_rng([seed, 2, number]).choice(count, train, replace=False)] = True
    start = time.perf_counter()
    sample = np.concatenate([block[picked[lo:lo + len(block)]] for lo, block in chunks(shard / EMBEDDINGS)])
    read_seconds = time.perf_counter() - start
    start = time.perf_counter()
    # The stage's code: factory, training, search settings. It adds the sample too, which reset() drops
    # (train_seconds includes that add).
    index = build_index(sample, kind)
    train_seconds = time.perf_counter() - start
    del sample
    index.reset()  # keeps the training; the shard's vectors go in below, in passage order
    start = time.perf_counter()
    for _, block in chunks(shard / EMBEDDINGS):
        index.add(block)
    add_seconds = time.perf_counter() - start
    manifest = write_shard(shard, index, EMBEDDER, kind, number)
    return {"vectors": count, "factory": kind.factory(), "train_vectors": train,
            "read_sample_seconds": round(read_seconds, 1), "train_seconds": round(train_seconds, 1),
            "add_seconds": round(add_seconds, 1), "add_vectors_per_second": round(count / add_seconds),
            "passages": manifest.passages, "index_bytes": disk_bytes(shard / "index.faiss")}


def recall_step(shard: Path, questions: list[str], kind, serving_nlist: int) -> dict:
    import faiss

    from ray_distill.tools.retrieval import Encoder, IndexKind, build_index

    vectors = np.load(shard / REAL_ROWS)
    queries = Encoder(EMBEDDER).encode_queries(questions)
    _, truth = build_index(vectors, IndexKind("flat")).search(queries, 3)
    start = time.perf_counter()
    approximate = build_index(vectors, kind)
    build_seconds = time.perf_counter() - start
    # The serving nprobe, and the one that visits the same share of this index's cells as serving does.
    same_share = max(1, round(kind.nprobe * kind.nlist / serving_nlist))
    recall = {}
    for nprobe in dict.fromkeys((kind.nprobe, same_share)):
        faiss.extract_index_ivf(approximate).nprobe = nprobe
        _, found = approximate.search(queries, 3)
        recall[str(nprobe)] = round(sum(len(set(t) & set(f)) for t, f in zip(truth, found)) / truth.size, 4)
    return {"vectors": len(vectors), "queries": len(queries), "factory": kind.factory(),
            "build_seconds": round(build_seconds, 1), "recall_at_3_by_nprobe": recall}


def serve_step(shards: list[Path], questions: list[str], levels: list[int], per_level: int, every: float) -> dict:
    import asyncio
    import statistics

    import psutil
    import ray

    from ray_distill.distributed.cluster import init_ray
    from ray_distill.distributed.retrieval import RetrievalClient
    from retrieval import closed_loop

    # The placement of scripts/bench/retrieval.py: the router embeds with the machine's cores and the
    # shards share them; logical CPUs beyond the cores let them all be placed.
    cores = os.cpu_count()
    init_ray(num_cpus=2 * cores)
    start = time.perf_counter()
    client = RetrievalClient.launch(shards, EMBEDDER, router_options={"num_cpus": cores},
                                    shard_options={"num_cpus": max(1, cores // len(shards))})
    load_seconds = time.perf_counter() - start
    router = client.routers[0]
    # The actors are this process's descendants (the local Ray's raylet is its child), named by their title.
    actors = {}
    for process in psutil.Process().children(recursive=True):
        try:
            title = process.cmdline()[0] if process.cmdline() else ""
        except psutil.Error:  # a short-lived Ray helper already gone
            continue
        if title.startswith(("ray::RetrievalRouter", "ray::ShardActor")):
            actors[process.pid] = process
    (router_pid,) = [pid for pid, p in actors.items() if p.cmdline()[0].startswith("ray::RetrievalRouter")]
    samples: list[dict] = []

    async def sample(stop: asyncio.Event) -> None:
        while True:
            stats = await router.stats.remote()
            samples.append({"t": round(time.perf_counter() - start, 1), "router": actors[router_pid].memory_info().rss,
                            **{f"shard-{n}": s["process_rss_bytes"] for n, s in enumerate(stats)}})
            try:
                await asyncio.wait_for(stop.wait(), every)
                return
            except asyncio.TimeoutError:
                pass

    async def measure() -> list[dict]:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        results = []
        for clients in levels:
            await closed_loop(client, [f"warm-up {clients} {i}" for i in range(2 * clients)], clients)
            # Distinct texts, so no answer comes from the router's cache.
            queries = [f"{questions[i % len(questions)]} ({clients}-{i})" for i in range(per_level)]
            qps, latencies = await closed_loop(client, queries, clients)
            results.append({"clients": clients, "queries": per_level, "qps": round(qps, 1),
                            "p50_ms": round(statistics.median(latencies) * 1000, 1),
                            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1)})
        stop.set()
        await sampler
        return results

    levels_out = asyncio.run(measure())
    stats = ray.get(router.stats.remote())
    memory = {name: {"min_rss_bytes": min(s[name] for s in samples), "max_rss_bytes": max(s[name] for s in samples),
                     "first_rss_bytes": samples[0][name], "last_rss_bytes": samples[-1][name]}
              for name in samples[0] if name != "t"}
    # Peaks over each actor's life, loading included (shard actors are told apart only by process id).
    peaks = {("router" if pid == router_pid else f"shard actor {pid}"): peak_rss(pid) for pid in actors}
    client.close()
    ray.shutdown()
    return {"load_seconds": round(load_seconds, 1), "levels": levels_out, "memory": memory, "actor_peaks_bytes": peaks,
            "samples": len(samples), "sampled_seconds": round(samples[-1]["t"] - samples[0]["t"], 1),
            "index_bytes": [s["index_bytes"] for s in stats], "passages": [s["passages"] for s in stats]}


# --- helpers ------------------------------------------------------------------------------------------

def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def npy_layout(path: Path) -> tuple[int, int, int]:
    """(rows, columns, data offset) of a 2-D float32 .npy file."""
    array = np.load(path, mmap_mode="r")
    if array.dtype != np.float32 or array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D float32 array, got {array.dtype} {array.shape}")
    return array.shape[0], array.shape[1], array.offset


def chunks(path: Path):
    """(first row, rows) of a 2-D float32 .npy file, CHUNK rows at a time, read with plain file reads: a
    memory map would count every page read in this process's RSS."""
    count, dimension, offset = npy_layout(path)
    with open(path, "rb") as f:
        f.seek(offset)
        for lo in range(0, count, CHUNK):
            size = min(CHUNK, count - lo)
            yield lo, np.fromfile(f, dtype=np.float32, count=size * dimension).reshape(size, dimension)


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss(pid: int) -> int:
    """A live process's peak resident set (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} reports no VmHWM")


def _measured(step, *args) -> dict:
    start = time.perf_counter()
    figures = step(*args)
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, **figures,
            "measured": datetime.date.today().isoformat()}


def in_child(step, *args) -> dict:
    """`step(*args)`'s figures, its wall time and peak RSS, from a fresh process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, step, *args).result()


# --- the run ------------------------------------------------------------------------------------------

def run(args) -> dict:
    from ray_distill.config import load_config
    from ray_distill.data.world import read_manifest
    from ray_distill.distributed.indexing import has_embeddings
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.paths import SPLIT
    from ray_distill.stages.services import index_kind, shard_indexed
    from ray_distill.tools.retrieval import IndexKind

    out = args.out.resolve()
    per_shard = -(-args.passages // SHARDS)
    nlist = args.nlist or nlist_for(per_shard)
    overrides = [f"run.dir={out}", "run.stages=[world]", f"world.num_passages={args.passages}",
                 f"world.num_fact_questions={args.questions}", "world.num_math_questions=0", "world.test_fraction=0",
                 f"index.passages_per_shard={per_shard}", "index.kind=ivf_pq", f"index.nlist={nlist}",
                 f"index.pq_m={args.pq_m}", "index.pq_bits=8", f"index.nprobe={args.nprobe}"]
    config = load_config(REPO / "experiments/quickstart.yaml", overrides)
    kind = index_kind(StageContext(config, out))
    index = out / "index"
    shards = [index / f"shard-{n:05d}" for n in range(SHARDS)]
    real = min(args.real, per_shard)
    real_kind = IndexKind("ivf_pq", nlist=nlist_for(real), pq_m=args.pq_m, pq_bits=8, nprobe=args.nprobe)

    def questions() -> list[str]:
        return [q["question"] for q in json.loads((out / "world/questions/fact_train.json").read_text())["examples"]]

    def real_rows_ok() -> bool:
        path = shards[0] / REAL_ROWS
        return path.is_file() and np.load(path, mmap_mode="r").shape[0] == real

    settings = {"passages": args.passages, "shards": SHARDS, "real": args.real, "questions": args.questions,
                "factory": kind.factory(), "nprobe": args.nprobe, "seed": args.seed,
                "recall_factory": real_kind.factory(), "clients": args.clients, "queries_per_level": args.queries}
    record = out / "scale.json"
    earlier = json.loads(record.read_text()) if record.is_file() else {"settings": {}, "steps": {}}
    # The data steps check their outputs on disk; the two measurements are redone when any setting changed.
    same = earlier["settings"] == settings
    world = read_manifest(out / "world")
    steps = [
        ("world", lambda: world is not None and world["num_passages"] == args.passages
         and world["questions"]["fact_train"]["count"] == args.questions,
         lambda: (world_step, overrides)),
        ("split", lambda: (index / SPLIT).is_file(), lambda: (split_step, overrides)),
        ("embed", real_rows_ok, lambda: (embed_step, shards[0], real)),
        ("synthetic", lambda: all(has_embeddings(s, EMBEDDER) and (s / SYNTHETIC).is_file() for s in shards),
         lambda: (synthetic_step, shards, args.seed)),
        *[(f"build-{n:05d}", lambda s=s: shard_indexed(s, EMBEDDER, kind),
           lambda n=n, s=s: (build_step, s, n, kind, args.seed))
          for n, s in enumerate(shards)],
        ("recall", lambda: same, lambda: (recall_step, shards[0], questions(), real_kind, nlist)),
        ("serve", lambda: same, lambda: (serve_step, shards, questions(), args.clients, args.queries, args.sample_every)),
    ]
    names = [name for name, _, _ in steps]
    if args.start and args.start not in names:
        raise SystemExit(f"--from {args.start}: no such step; steps: {', '.join(names)}")
    done = earlier["steps"] if earlier["settings"].get("passages") == args.passages else {}
    figures = {"settings": settings, "steps": done}
    redo = False
    for n, (name, complete, call) in enumerate(steps):
        if not redo and (name == args.start or name not in done or not complete()):
            redo = True  # this step and every later one: their figures would describe outputs about to change
            for later in names[n:]:
                done.pop(later, None)
        if not redo:
            print(f"[{name}] done earlier ({done[name]['measured']}), skipped", flush=True)
            continue
        print(f"[{name}] running", flush=True)
        step, *step_args = call()
        done[name] = in_child(step, *step_args)
        record.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"[{name}] {brief(done[name])}", flush=True)
    figures["disk_bytes"] = disk_bytes(out)
    record.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def brief(figures: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, (dict, list)))


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def report(figures: dict) -> None:
    s, steps = figures["settings"], figures["steps"]
    print(f"\n{s['passages']:,} passages in {s['shards']} shards; {s['factory']} nprobe {s['nprobe']}; "
          f"real slice {s['real']:,} vectors (minilm-l6), the rest synthetic")
    print(f"{'step':<12} {'time':>9} {'peak RSS':>10} {'disk':>10}  rate")
    rates = {"world": lambda f: f"{f['passages'] / f['seconds']:,.0f} passages/s",
             "split": lambda f: f"{f['passages'] / f['seconds']:,.0f} passages/s",
             "embed": lambda f: f"{f['passages_per_second']:,.0f} passages/s",
             "synthetic": lambda f: f"{f['synthetic_vectors_per_second']:,.0f} vectors/s generated",
             "recall": lambda f: "recall@3 against Flat by nprobe: " + ", ".join(
                 f"{k}: {v:.3f}" for k, v in f["recall_at_3_by_nprobe"].items())
             + f" ({f['factory']}, {f['vectors']:,} real)",
             "serve": lambda f: f"loaded in {f['load_seconds']} s"}
    for name, f in steps.items():
        rate = rates.get(name) or (lambda f: f"train {f['train_vectors']:,} in {f['train_seconds']} s, add "
                                             f"{f['add_vectors_per_second']:,} vectors/s; index {gib(f['index_bytes'])}")
        disk = f.get("disk_bytes") or (f["index_bytes"] if name.startswith("build") else None)
        print(f"{name:<12} {f['seconds']:>8.1f}s {gib(f['peak_rss_bytes']):>10} {gib(disk) if disk else '':>10}  {rate(f)}")
    if "serve" in steps:
        serve = steps["serve"]
        for level in serve["levels"]:
            print(f"  {level['clients']:>3} clients: {level['qps']:8.1f} QPS  p50 {level['p50_ms']:.1f} ms  "
                  f"p99 {level['p99_ms']:.1f} ms")
        print(f"  actor RSS over {serve['sampled_seconds']:.0f} s ({serve['samples']} samples): " + "; ".join(
            f"{name} {gib(m['min_rss_bytes'])}-{gib(m['max_rss_bytes'])}" for name, m in serve["memory"].items()))
        print("  actor peaks, loading included: "
              + "; ".join(f"{k} {gib(v)}" for k, v in serve["actor_peaks_bytes"].items()))
    print(f"disk, whole run: {gib(figures['disk_bytes'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: ~/.cache/ray-distill/bench-scale/world-PASSAGES")
    parser.add_argument("--quick", action="store_true", help="a 20k real slice, 400 questions, 400 queries per level")
    parser.add_argument("--real", type=int, default=100_000, help="passages embedded for real")
    parser.add_argument("--questions", type=int, default=2000, help="world fact questions (the queries)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells per shard (default: ~4*sqrt(shard))")
    parser.add_argument("--pq-m", type=int, default=64,
                        help="PQ sub-quantizers of 8 bits (the index stage's default); must divide 384")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64], help="concurrent clients, one run each")
    parser.add_argument("--queries", type=int, default=3000, help="queries per client level")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between actor memory samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from", dest="start", default=None, help="redo this step and every one after it")
    args = parser.parse_args()
    if args.quick:
        args.real, args.questions, args.queries = min(args.real, 20_000), min(args.questions, 400), min(args.queries, 400)
    args.out = args.out or Path.home() / ".cache" / "ray-distill" / "bench-scale" / f"world-{args.passages}"
    report(run(args))


if __name__ == "__main__":
    main()
