"""The package roots: every public name resolves, and importing them loads neither TensorFlow nor FAISS."""

from __future__ import annotations

import subprocess
import sys

import pytest

import extractor
import index
from tests.conftest import REPO


def test_importing_the_packages_loads_neither_tensorflow_nor_faiss() -> None:
    code = (
        "import sys, extractor, index\n"
        "from extractor import __version__\n"
        "from extractor.cli import main\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", [extractor, index], ids=["extractor", "index"])
def test_every_public_name_resolves(package) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018
