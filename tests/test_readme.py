"""The README's Python examples (``>>>`` blocks), run for real in order: seeded random weights, 18 small photos
in three class folders, one text file, in a temporary directory."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.headdata import make_class_tree
from tests.imagefiles import make_text_file

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_examples() -> str:
    """The README's python blocks that hold ``>>>`` examples, joined in order."""
    blocks = [b for b in FENCE.findall((REPO / "README.md").read_text("utf-8")) if b.lstrip().startswith(">>>")]
    assert len(blocks) >= 3, "the README lost its Python examples"
    return "\n".join(blocks)


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_class_tree(tmp_path / "photos", per_class=6)
    make_text_file(tmp_path / "notes.txt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALEXFEAT_WEIGHTS", "random")
    test = doctest.DocTestParser().get_doctest(readme_examples(), {}, "README.md", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
    assert runner.tries >= 20
