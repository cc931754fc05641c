"""Joining a Ray cluster (or starting a local Ray instance) for the engines that run on Ray.

Ray is an optional dependency (``pip install 'alexfeat[ray]'``): it is imported here, on demand, with a message
that says how to install it when it is missing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from extractor.errors import AlexfeatError

RAY_VERSION = "2.60"
INSTALL_HINT = "pip install 'alexfeat[ray]'"


def import_ray() -> Any:
    """``ray`` with Ray Data, or an AlexfeatError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise AlexfeatError(
            f"--engine ray needs Ray Data ({exc.name or 'ray'} is not installed): {INSTALL_HINT} "
            f"(ray[data] {RAY_VERSION}), on this machine and on every node of the cluster"
        ) from None
    return ray


def connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``ray://HOST:10001``) or, with None, start a local Ray instance
    (no dashboard) unless this process already runs one. True when this call started or joined it, so the caller
    shuts it down when done."""
    if ray.is_initialized():
        return False
    for name in ("ray", "ray.data"):  # start-up INFO lines stay in Ray's log files, out of the user's terminal
        logging.getLogger(name).setLevel(logging.WARNING)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        options |= {"include_dashboard": False, "num_cpus": os.cpu_count()}
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AlexfeatError(
            f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with `ray start --head` "
            "(see docs/scale.md), or leave --address out to run a local Ray instance"
        ) from None
    return True
