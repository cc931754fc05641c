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
