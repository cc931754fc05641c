"""The click options and messages that several commands share, declared once.

Both command-line modules use them: ``extractor/cli/`` and ``index/cli.py``. They live here, low in the package
order, because ``index/`` may not import ``extractor/cli/`` (see ARCHITECTURE.md, Import order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

progress_option: Callable[[F], F] = click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)

recorded_weights_option: Callable[[F], F] = click.option(
    "--weights",
    default=None,
    metavar="SOURCE",
    help="Weights to use instead of the source recorded with the embeddings (e.g. when that file is not on this "
    "machine); its sha256 must match.",
)


def output_dir_option(help: str) -> Callable[[F], F]:
    """``-o/--output OUT_DIR``: the directory a command writes (required)."""
    return click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help=help)


def warn(message: str) -> None:
    """A warning for the user, on stderr: ``warning: MESSAGE``."""
    click.echo(f"warning: {message}", err=True)
