"""The embed job: discover → plan → decode → infer → write, each stage a small piece joined by bounded queues.

- :func:`extractor.images.discover.discover` lists the image files;
- :func:`extractor.embed.resume.plan_resume` decides which are new or changed;
- :class:`extractor.images.file_decoder.FileDecoder` reads a file once, hashes it and decodes it, in worker processes
  (:func:`extractor.embed.decode_stream.decode_stream`) so that decoding overlaps TensorFlow's start-up and inference
  without queueing on the GIL;
- :class:`extractor.network.features.FeatureExtractor` embeds batches in one compiled TensorFlow graph;
- :class:`extractor.store.DatasetWriter` appends atomic Parquet parts and records per-file errors.

The pieces are plain callables on plain data, so they also fit a distributed engine's ``map_batches``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractor.embed.decode_stream import MAX_DECODE_SECONDS, decode_stream
from extractor.embed.resume import ResumePlan, apply_plan, load_existing, plan_resume
from extractor.embed.settings import extractor_for
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.images.discover import FileEntry, discover, label_of
from extractor.images.file_decoder import Decoded, Failed, FileDecoder
from extractor.network.features import FeatureExtractor
from extractor.network.tf_runtime import import_tensorflow
from extractor.parallel.stream import batched, usable_cpus
from extractor.store import (
    DatasetWriter,
    EmbeddingMeta,
    ErrorRecord,
    open_for_writing,
    read_errors,
)
from extractor.util.progress import Progress
from extractor.util.timing import Phases

log = logging.getLogger(__name__)
STAGES = ("discover", "plan", "model", "decode", "infer", "write")


@dataclass
class EmbedSummary:
    """What a run did, and where its time went."""

    embedded: int = 0
    unchanged: int = 0
    errors: int = 0
    skipped_errors: int = 0
    dropped: int = 0
    discovered: int = 0
    wall_seconds: float = 0.0
    stages: Phases = field(default_factory=lambda: Phases("embed", STAGES, level=logging.DEBUG))
    meta: EmbeddingMeta | None = None  # the dataset's model settings (arch, layer, pooling, dim, ...)

    @property
    def images_per_second(self) -> float:
        return (self.embedded + self.errors) / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def changed(self) -> bool:
        """Whether the run embedded, recorded or dropped anything."""
        return bool(self.embedded or self.errors or self.dropped)

    def lines(self, out_dir: str | None = None) -> list[str]:
        """The summary to print: one short line for a run with nothing to do, else counts and times."""
        known = f" (+{self.skipped_errors} known errors skipped)" if self.skipped_errors else ""
        if not self.changed:
            return [f"up to date: unchanged {self.unchanged}{known}, nothing to embed"]
        where = f" (list them: alexfeat errors {out_dir})" if self.errors and out_dir else ""
        stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.stages.seconds.items())
        return [
            f"embedded {self.embedded}, unchanged {self.unchanged}, errors {self.errors}{where}"
            + known
            + (f", rows dropped {self.dropped}" if self.dropped else ""),
            f"wall {self.wall_seconds:.1f}s, {self.images_per_second:.1f} images/s; stages: {stages} "
            "(model: TensorFlow's start-up and the model build, while files decode; decode: summed over workers)",
        ]


@dataclass
class EmbedJob:
    """One ``alexfeat embed`` run over ``images_dir`` into the dataset ``out_dir``."""

    images_dir: str
    out_dir: str
    extractor: FeatureExtractor
    batch_size: int = 32
    workers: int = field(default_factory=usable_cpus)
    rows_per_part: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decode_seconds: float | None = MAX_DECODE_SECONDS  # CPU time per file in a decode process; None: no limit
    prune: bool = False
    retry_errors: bool = False  # also retry files that failed before and have not changed
    overwrite: bool = False
    follow_outside: bool = True  # follow symbolic links whose target is outside images_dir
    progress: bool | None = None  # None: a bar on a terminal, periodic log lines otherwise

    def metadata(self) -> EmbeddingMeta:
        """The extractor's settings with the images root: what the dataset records."""
        return dataclasses.replace(self.extractor.spec, root=os.path.abspath(self.images_dir))

    def run(self) -> EmbedSummary:
        meta = self.metadata()
        summary = EmbedSummary(meta=meta)
        start = time.perf_counter()
        timer = summary.stages
        with open_for_writing(self.out_dir, meta, overwrite=self.overwrite, rows_per_part=self.rows_per_part) as writer:
            unlisted: list[ErrorRecord] = []  # folders that could not be listed: recorded, the job goes on
            with timer("discover"):
                entries = list(
                    discover(
                        self.images_dir, lambda rel, exc: unlisted.append(_unlisted(rel, exc)), self.follow_outside
                    )
                )
            summary.discovered = len(entries)
            with timer("plan"):
                plan = self._plan(entries)
            summary.unchanged, summary.skipped_errors = plan.unchanged, plan.skipped_errors
            summary.dropped = len(plan.drop_ids)
            with timer("write"):
                apply_plan(writer, plan)  # drop old rows first: a crash then re-embeds them, never duplicates
                writer.add_errors(unlisted)
            summary.errors += len(unlisted)
            if plan.to_embed:  # an up-to-date dataset never loads TensorFlow
                self._embed_while_warming_up(plan.to_embed, writer, summary)
            with timer("write"):
                writer.flush()
        summary.wall_seconds = time.perf_counter() - start
        return summary

    def _embed_while_warming_up(self, todo: list[FileEntry], writer: DatasetWriter, summary: EmbedSummary) -> None:
        """Decode processes start first; TensorFlow's import and the model build (~3 s of one core) then run in a
        thread while files decode. Started the other way round, the import's long calls that hold the GIL (loading
        TensorFlow's libraries) delay the processes' start by ~0.5 s, with a core idle."""
        decoder = FileDecoder(self.extractor.resize_spec, self.max_pixels)
        decoded = decode_stream(
            decoder,
            todo,
            self.workers,
            in_flight=32 * self.batch_size,  # ~150 MB at 32
            max_seconds=self.max_decode_seconds,
        )
        with contextlib.closing(decoded):
            first = next(decoded)  # the processes are up and decoding
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model") as warm:
                model_ready = warm.submit(self._warm_up, summary.stages)
                try:
                    self._embed(itertools.chain([first], decoded), len(todo), writer, summary, model_ready)
                finally:
                    concurrent.futures.wait([model_ready])  # its quiet import must end before errors print

    def _warm_up(self, timer: Phases) -> None:
        with timer("model"):
            import_tensorflow()
            self.extractor.warm_up()

    def _plan(self, entries: list[FileEntry]) -> ResumePlan:
        """Compare with what the (already opened, so overwrite-cleared) dataset holds."""
        return plan_resume(
            entries,
            load_existing(self.out_dir),
            prune=self.prune,
            errors=read_errors(self.out_dir),
            retry_errors=self.retry_errors,
        )

    def _embed(
        self,
        decoded: Iterator[Decoded | Failed],
        count: int,
        writer: DatasetWriter,
        summary: EmbedSummary,
        model_ready: concurrent.futures.Future,
    ) -> None:
        timer = summary.stages
        batches = batched(decoded, self.batch_size)
        with Progress(count, "embed", enabled=self.progress) as progress:
            early = decoded_while_waiting(batches, model_ready, STARTUP_BUFFER_BYTES)
            log.debug("%d files decoded while the model started", sum(map(len, early)))
            for batch in itertools.chain(early, batches):
                good = [r for r in batch if isinstance(r, Decoded)]
                bad = [r for r in batch if isinstance(r, Failed)]
                timer.add("decode", sum(r.seconds for r in batch))
                model_ready.result()  # raises what the model build raised
                with timer("infer"):
                    vectors = self.extractor(np.stack([r.pixels for r in good])) if good else None
                with timer("write"):
                    if vectors is not None:
                        writer.add(_rows(good, vectors))
                    if bad:
                        writer.add_errors(
                            ErrorRecord(r.entry.path, r.error, r.message, r.entry.size, r.entry.mtime_ns) for r in bad
                        )
                summary.embedded += len(good)
                summary.errors += len(bad)
                progress.update(len(batch), errors=summary.errors)


def embed_folder(
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    weights: str | None = None,
    arch: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    resize: str | None = None,
    **options: Any,
) -> EmbedSummary:
    """Embed every image under ``images_dir`` into the dataset ``out_dir`` (created; a rerun embeds only new and
    changed files), as ``alexfeat embed`` does.

    ``weights``: ``"imagenet"``, a weights file or ``"random"`` (default: ``$ALEXFEAT_WEIGHTS`` or imagenet);
    ``arch``, ``layer``, ``pooling``, ``resize``: as :class:`FeatureExtractor` takes them (default: pool5 and
    GeM). Into an existing dataset, what is left out is taken from its metadata (a rerun needs no model options)
    and what differs from it is refused (:func:`extractor.embed.settings.extractor_for`). ``options``: the
    fields of :class:`EmbedJob` (``batch_size``, ``workers``, ``rows_per_part``, ``max_pixels``,
    ``max_decode_seconds``, ``prune``, ``retry_errors``, ``overwrite``, ``follow_outside``, ``progress``). It
    starts decode processes: call it under ``if __name__ == "__main__":`` in a script.
    """
    next(iter(discover(images_dir)), None)  # a missing or unreadable folder fails before the model loads
    extractor = extractor_for(out_dir, weights, arch, layer, pooling, resize, overwrite=options.get("overwrite", False))
    return EmbedJob(os.fspath(images_dir), os.fspath(out_dir), extractor, **options).run()


STARTUP_BUFFER_BYTES = 512 * 2**20
"""Decoded pixels held while TensorFlow starts (~3,400 images at 224 px): enough for its ~5 s on any machine."""


def decoded_while_waiting(
    batches: Iterator[list[Decoded | Failed]], ready: concurrent.futures.Future, max_bytes: int
) -> list[list[Decoded | Failed]]:
    """Pull batches while ``ready`` is not done, up to ``max_bytes`` of decoded pixels, so that decoding keeps the
    cores busy during TensorFlow's start-up instead of stalling on a full queue."""
    early: list[list[Decoded | Failed]] = []
    held = 0
    while not ready.done() and held < max_bytes:
        batch = next(batches, None)
        if batch is None:
            break
        early.append(batch)
        held += sum(r.pixels.nbytes for r in batch if isinstance(r, Decoded))
    return early


def _unlisted(rel_path: str, exc: OSError) -> ErrorRecord:
    """The error record of a folder that could not be listed (or a file that could not be stat'ed)."""
    log.warning("skipping %s: %s", rel_path, exc.strerror or exc)
    return ErrorRecord(rel_path, "unreadable", f"cannot list or stat it: {exc.strerror or exc}")


def _rows(decoded: list[Decoded], vectors: np.ndarray) -> dict[str, object]:
    """The rows of a batch; the writer derives each ``id`` from its path."""
    paths = [r.entry.path for r in decoded]
    return {
        "path": paths,
        "label": [label_of(p) for p in paths],
        "sha256": np.frombuffer(b"".join(r.sha256 for r in decoded), np.uint8).reshape(-1, 32),
        "size": np.array([r.entry.size for r in decoded], np.int64),
        "mtime_ns": np.array([r.entry.mtime_ns for r in decoded], np.int64),
        "width": np.array([r.width for r in decoded], np.int32),
        "height": np.array([r.height for r in decoded], np.int32),
        "embedding": vectors,
    }
