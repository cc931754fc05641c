"""Import TensorFlow for the CLI: without its start-up noise on the terminal, and without modules it never uses."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Iterator

SKIPPED_AT_IMPORT = ("sklearn",)
"""Imported by Keras at start-up, when installed, only for its scikit-learn wrappers (which alexfeat never uses):
about 1 s of CPU per command measured on a 2-core machine. ``import_tensorflow`` keeps them out of Keras' import;
a later ``import sklearn`` works as usual, only ``keras.wrappers.SKLearn*`` stay unavailable in that process."""


_TF_NOISE = re.compile(r"(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] |WARNING: All log messages before absl::)")
"""TensorFlow's C++ log lines (absl format) and absl's notice about them."""


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the duration (C++ loggers write there directly), then pass
    on everything but TensorFlow's log lines: what other threads print meanwhile arrives late, never lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _TF_NOISE.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


@contextlib.contextmanager
def _skipped(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``import NAME`` raise ImportError for the duration, for the names not imported yet."""
    skipped = [name for name in names if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        for name in skipped:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


def import_tensorflow(quiet: bool = True) -> ModuleType:
    """Import TensorFlow and initialise its devices; with ``quiet`` its C++ start-up log lines (CUDA probing,
    oneDNN) are hidden and the modules in ``SKIPPED_AT_IMPORT`` are kept out of Keras' import.

    ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide the lines: some are printed before TensorFlow reads it.
    """
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_filtered(), _skipped(SKIPPED_AT_IMPORT):
        import tensorflow as tf

        tf.config.list_physical_devices()
        import keras  # noqa: F401  (Keras prints its own backend notice on first import)
    return tf
