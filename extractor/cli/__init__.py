"""The ``alexfeat`` command: a click group whose subcommands live in the modules that do the work.

Subcommands are imported lazily so that ``alexfeat --help`` answers without loading TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# Quiet TensorFlow's C++ start-up noise for the CLI only (a library user keeps their own setting).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click

from extractor import __version__
from extractor.errors import AlexfeatError

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "weights": "extractor.cli.weights:weights",
    "embed": "extractor.cli.embed:embed",
    "errors": "extractor.cli.embed:errors",
    "index": "index.cli:index_group",
    "search": "index.cli:search",
    "dedup": "index.cli:dedup",
    "serve": "index.cli:serve",
    "train": "extractor.cli.heads:train",
    "predict": "extractor.cli.heads:predict",
    "export": "extractor.cli.heads:export",
    "finetune": "extractor.cli.heads:finetune",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AlexfeatError as exc:
            raise click.ClickException(str(exc)) from exc


class _LogFormatter(logging.Formatter):
    """``warning: message`` by default, as the commands print their own warnings; with ``-v``, time and module."""

    def __init__(self, detailed: bool) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s: %(message)s" if detailed else "%(message)s")
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if self.detailed else f"{record.levelname.lower()}: {text}"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alexfeat")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """ImageNet-pretrained AlexNet embeddings: embed image folders, search them, train heads."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter(detailed=verbose > 0))
    logging.basicConfig(level=level, handlers=[handler])
    if verbose < 2:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)


def run() -> None:
    """The console entry point: ``main``, then, once TensorFlow is loaded, an immediate exit.

    Python's normal shutdown tears down TensorFlow's thousands of modules and objects: 1.2-1.3 s measured on a
    2-core machine after every command that used it, with nothing left to do (files are written atomically and
    closed, worker pools shut down). Output streams and logging are flushed first.
    """
    try:
        main.main(prog_name="alexfeat")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if "tensorflow" not in sys.modules:
        raise SystemExit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # a message, printed as SystemExit would print it
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
