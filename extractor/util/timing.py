"""Timing of the phases of a job (embed: discover, decode, infer...; index build: train, add, tune...)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("alexfeat")


class Phases:
    """``with phases("train"): ...`` times a phase; ``phases.seconds`` maps phase names to seconds."""

    def __init__(self, job: str, names: tuple[str, ...] = (), level: int = logging.INFO) -> None:
        self.job, self.level = job, level
        self.seconds: dict[str, float] = dict.fromkeys(names, 0.0)  # reported in this order

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            log.log(self.level, "%s: %s took %.3f s", self.job, name, elapsed)

    def add(self, name: str, seconds: float) -> None:
        """Record time spent elsewhere (e.g. summed over worker threads)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self.seconds.items()}
