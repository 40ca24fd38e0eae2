from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The paper-format benchmark files sit beside the checkout; tests read them in place.
SHARED_BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"


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
