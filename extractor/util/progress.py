"""Progress for long jobs: a tqdm bar (items/s, ETA) on a terminal, a quiet line every 30 s in logs."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``with Progress(total, "embed") as p: p.update(n)``; silent when there is nothing to do."""

    def __init__(
        self, total: int, desc: str, enabled: bool | None = None, unit: str = "img", log_every: float = 30.0
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.log_every = log_every
        self._bar: Any = None
        self._start = self._last_log = time.perf_counter()
        tty = sys.stderr.isatty()
        self._lines = (enabled is None and not tty) and total > 0
        if (enabled or (enabled is None and tty)) and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, smoothing=0.1, dynamic_ncols=True)

    def update(self, n: int, **postfix: Any) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        elif self._lines and time.perf_counter() - self._last_log >= self.log_every:
            self._last_log = time.perf_counter()
            self._log(postfix)

    def _log(self, postfix: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed else 0.0
        eta = (self.total - self.done) / rate if rate else float("inf")
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, ETA {eta:.0f}s{extra})",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
