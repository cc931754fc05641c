"""Shared fixtures: the maintainers' data in ``../shared`` (skipped where absent) and small real images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; the calling test is skipped when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{Path('..', 'shared', *parts)} is not present")
    return path


@pytest.fixture(scope="session")
def caffe_weights() -> Path:
    return shared_path("weights", "alexnet_imagenet_conv_caffe_layout.npz")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return shared_path("fixtures")


@pytest.fixture(scope="session")
def dev_images() -> Path:
    return shared_path("data", "caltech101_subset20")


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole test session (2 CPUs, a small object store, no dashboard, token
    authentication off); skipped where Ray is not installed. Engines find it running and leave it running."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'alexfeat[ray]')")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    yield ray
    if started:
        ray.shutdown()
