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


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's ``ThreadedMotoServer``) on a free loopback port for the whole session,
    reached as the user's would be: ``AWS_ENDPOINT_URL`` and credentials in the environment (so spawned decode
    processes see them too). Yields its URL; skipped where moto or s3fs is not installed."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'alexfeat[s3]')")
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import logging
    import socket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "alexfeat-test",
        "AWS_SECRET_ACCESS_KEY": "alexfeat-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield settings["AWS_ENDPOINT_URL"]
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A new, empty bucket on the session's S3 server (named after the test); yields (s3fs file system, name)."""
    import re

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs.mkdir(name)
    yield fs, name
    fs.rm(name, recursive=True)
