"""Import TensorFlow for the CLI: without its start-up noise on the terminal, and without modules it never uses."""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Iterator

SKIPPED_AT_IMPORT = ("sklearn",)
"""Imported by Keras at start-up, when installed, only for its scikit-learn wrappers (which alexfeat never uses):
about 1 s of CPU per command measured on a 2-core machine. ``import_tensorflow`` keeps them out of Keras' import;
a later ``import sklearn`` works as usual, only ``keras.wrappers.SKLearn*`` stay unavailable in that process."""


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ loggers write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
    """Import TensorFlow and initialise its devices; with ``quiet`` the CUDA/oneDNN start-up lines are hidden and
    the modules in ``SKIPPED_AT_IMPORT`` are kept out of Keras' import.

    ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide the lines: some are printed before TensorFlow reads it.
    """
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced(), _skipped(SKIPPED_AT_IMPORT):
        import tensorflow as tf

        tf.config.list_physical_devices()
        import keras  # noqa: F401  (Keras prints its own backend notice on first import)
    return tf
