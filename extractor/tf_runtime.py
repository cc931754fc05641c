"""Import TensorFlow for the CLI without its start-up noise on the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Iterator


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


def import_tensorflow(quiet: bool = True) -> ModuleType:
    """Import TensorFlow and initialise its devices; with ``quiet`` the CUDA/oneDNN start-up lines are hidden.

    ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide them: some are printed before TensorFlow reads it.
    """
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
        import keras  # noqa: F401  (Keras prints its own backend notice on first import)
    return tf
