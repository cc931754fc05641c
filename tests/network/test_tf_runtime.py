"""The CLI's TensorFlow import: quiet, and without the modules Keras loads only for features alexfeat never uses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

SCRIPT = """
import gc, sys
from extractor.network.tf_runtime import import_tensorflow
tf = import_tensorflow()
print("keras loaded:", "keras" in sys.modules, "sklearn loaded:", "sklearn" in sys.modules,
      "scipy loaded:", "scipy" in sys.modules, "gc enabled:", gc.isenabled(), "frozen:", gc.get_freeze_count() > 10**5)
import sklearn, scipy.sparse  # still importable afterwards
print("tf", tf.constant(2).numpy() * 3, "sklearn", sklearn.__name__, "scipy", scipy.sparse.issparse(1))
"""


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")
def test_quiet_import_leaves_out_unused_modules_pauses_gc_and_prints_nothing():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "keras loaded: True sklearn loaded: False scipy loaded: False gc enabled: True frozen: True" in result.stdout
    assert "tf 6 sklearn sklearn scipy False" in result.stdout
    assert result.stderr == ""
