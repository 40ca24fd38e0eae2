from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ray_distill.engines import Completion, GenerationRequest, Sample

REPO = Path(__file__).resolve().parents[1]
# The paper-format benchmark files sit beside the checkout; tests read them in place.
SHARED_BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"


def write_shards(directory: Path, records: list[dict], vectors, kind, count: int) -> list[Path]:
    """`count` index shards of MiniLM `vectors` over `records`, split evenly in order."""
    import numpy as np

    from ray_distill.tools.retrieval import build_index, write_passages, write_shard

    bounds = np.linspace(0, len(records), count + 1).astype(int)
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        write_passages(directory / f"shard-{n}", [r["id"] for r in records[lo:hi]], [r["contents"] for r in records[lo:hi]])
        write_shard(directory / f"shard-{n}", build_index(vectors[lo:hi], kind), "minilm-l6", kind, shard=n)
    return [directory / f"shard-{n}" for n in range(count)]


@dataclass
class ScriptedEngine:
    """Answers the k-th request with script[k] (a list of n texts)."""

    script: list[list[str]]
    model: str = "scripted"
    requests: list[GenerationRequest] = field(default_factory=list)

    async def generate(self, request: GenerationRequest) -> Completion:
        texts = self.script[len(self.requests)]
        self.requests.append(request)
        assert len(texts) == request.params.n
        return Completion([Sample(t, "stop", len(t.split())) for t in texts], prompt_tokens=10)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"benchmark files not found at {SHARED_BENCHMARKS}")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from ray_distill.models import resolve_model

    return resolve_model("tiny-random")


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (loopback only) shared by every test that needs it."""
    import ray

    from ray_distill.distributed.cluster import init_ray

    init_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory, local_ray) -> Path:
    """The run directory of `test_generation_stages.write_config`'s world and two-shard index, built once
    (the index stage takes 30-50 s on 2 cores); tests start their runs from a copy of it (`seed_run`)."""
    from test_generation_stages import write_config

    from ray_distill.config import load_config
    from ray_distill.stages.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("small-world")
    run_pipeline(load_config(write_config(base)), ["world", "index"], progress=False)
    return base / "run"


def seed_run(built: Path, config_path: Path) -> None:
    """Copy `built`'s world and index into the run directory of the config at `config_path`, recorded in its
    manifest as that config's own finished world and index stages. Only for a config whose world, index and
    embedder are `built`'s, so the copy is exactly what its own stages would build."""
    from ray_distill.config import load_config
    from ray_distill.fileio import write_json_atomic
    from ray_distill.stages import load
    from ray_distill.stages.pipeline import MANIFEST, read_run_manifest

    config, made = load_config(config_path), load_config(built / "config.yaml")
    assert (config.world, config.index, config.models.embedder) == (made.world, made.index, made.models.embedder)
    run_dir = Path(config.run.dir)
    for name in ("world", "index"):
        shutil.copytree(built / name, run_dir / name)
    done = read_run_manifest(built)["stages"]
    write_json_atomic(run_dir / MANIFEST, {"stages": {name: {**done[name], "fingerprint": load(name).fingerprint(config)}
                                                      for name in ("world", "index")}}, indent=2)


def pytest_collection_modifyitems(items):
    # A test on the shared local Ray needs Ray whatever its module says.
    for item in items:
        if "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 server (moto) on loopback; the code under test talks to it with pyarrow's own S3 client."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@contextlib.contextmanager
def serving_retrieval(run_dir: Path, *overrides: str):
    """`ray-distill serve-retrieval` on the quickstart config over `run_dir`, with its own Ray as a user would
    start it, on a free loopback port; yields (port, its "serving ..." line) and stops it with Ctrl-C."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    server = subprocess.Popen([sys.executable, "-m", "ray_distill.cli", "serve-retrieval", "experiments/quickstart.yaml",
                               f"run.dir={run_dir}", *overrides, f"retrieval.port={port}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "serving" not in line:
            line = server.stdout.readline()
            assert line, "the server exited before serving"
        threading.Thread(target=server.stdout.read, daemon=True).start()  # keep its pipe drained
        yield port, line, server
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
