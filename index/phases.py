"""Timing of the phases of a job (load, train, add, tune, write): each logged, all recorded in index.json."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("index")


class Phases:
    """``with phases("train"): ...`` times a phase; ``phases.seconds`` maps phase names to seconds."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)
            log.info("%s: %s took %.2f s", self.job, name, elapsed)

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 3)
