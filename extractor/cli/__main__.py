"""``python -m extractor.cli``: the ``alexfeat`` command."""

from extractor.cli import run

run()
