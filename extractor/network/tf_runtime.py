"""Import TensorFlow for the CLI: without its start-up noise on the terminal, without modules it never uses, and
without the garbage collector running through the import."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

SKIPPED_AT_IMPORT = ("sklearn", "scipy")
"""Imported at start-up, when installed, only for features alexfeat never uses: scikit-learn by Keras for its
scikit-learn wrappers (about 1 s of CPU per command on a 2-core machine), SciPy by TensorFlow's legacy Keras for
sparse-matrix input (0.15 s). ``import_tensorflow`` keeps them out of the import; a later ``import sklearn`` or
``import scipy`` works as usual, only ``keras.wrappers.SKLearn*`` stay unavailable in that process."""


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
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration, then move everything alive to the permanent generation.

    TensorFlow's import creates millions of objects and so triggers dozens of full collections that find nothing
    to free: 0.9-1.0 s of its 4-4.7 s import measured on a 2-core machine. Frozen afterwards, its modules are not
    traversed by later collections either. The import makes no garbage cycles worth collecting meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


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


def import_tensorflow(threads: int | None = None) -> ModuleType:
    """Import TensorFlow and initialise its devices, quietly: its C++ start-up log lines (CUDA probing, oneDNN)
    are hidden, the modules in ``SKIPPED_AT_IMPORT`` are kept out of the import, and the garbage collector waits
    until it is over. Once imported, TensorFlow is returned as it is. ``threads`` sets its intra- and inter-op
    thread pools (an actor given that many CPUs); it applies only to the first import in a process.

    ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide the lines: some are printed before TensorFlow reads it.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_filtered(), _skipped(SKIPPED_AT_IMPORT), _without_gc():
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.list_physical_devices()
        import keras  # noqa: F401  (Keras prints its own backend notice on first import)
    return tf
