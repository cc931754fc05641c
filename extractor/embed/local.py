"""The local engine: decode processes on this machine, TensorFlow in this process, overlapping its start-up.

Decode processes start first; TensorFlow's import and the model build (~3 s of one core) then run in a thread
while files decode (:func:`decoded_while_waiting` holds what is decoded meanwhile). Started the other way round,
the import's long calls that hold the GIL (loading TensorFlow's libraries) delay the processes' start by ~0.5 s,
with a core idle. Each batch then goes through the shared stages (:mod:`extractor.embed.stages`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from extractor.embed.decode_stream import decode_stream
from extractor.embed.stages import commit
from extractor.images.batches import apply_model, decode_columns
from extractor.images.discover import FileEntry
from extractor.images.file_decoder import Decoded, Failed, FileDecoder
from extractor.network.tf_runtime import import_tensorflow
from extractor.parallel.stream import batched
from extractor.store import DatasetWriter
from extractor.util.progress import Progress
from extractor.util.timing import Phases

if TYPE_CHECKING:
    from extractor.embed.job import EmbedJob, EmbedSummary
    from extractor.network.features import FeatureExtractor

log = logging.getLogger(__name__)

STARTUP_BUFFER_BYTES = 512 * 2**20
"""Decoded pixels held while TensorFlow starts (~3,400 images at 224 px): enough for its ~5 s on any machine."""


class LocalEngine:
    """Decode in ``job.workers`` processes (each file limited to ``job.max_decode_seconds`` of CPU), embed in
    this process."""

    name = "local"

    def embed(self, job: EmbedJob, todo: list[FileEntry], writer: DatasetWriter, summary: EmbedSummary) -> None:
        decoder = FileDecoder(job.extractor.resize_spec, job.max_pixels)
        decoded = decode_stream(
            decoder,
            todo,
            job.workers,
            in_flight=32 * job.batch_size,  # ~150 MB at 32
            max_seconds=job.max_decode_seconds,
        )
        with contextlib.closing(decoded):
            first = next(decoded)  # the processes are up and decoding
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model") as warm:
                model_ready = warm.submit(_warm_up, job.extractor, summary.stages)
                try:
                    batches = batched(itertools.chain([first], decoded), job.batch_size)
                    self._embed(batches, job, len(todo), writer, summary, model_ready)
                finally:
                    concurrent.futures.wait([model_ready])  # its quiet import must end before errors print

    @staticmethod
    def _embed(
        batches: Iterator[list[Decoded | Failed]],
        job: EmbedJob,
        count: int,
        writer: DatasetWriter,
        summary: EmbedSummary,
        model_ready: concurrent.futures.Future,
    ) -> None:
        timer, extractor = summary.stages, job.extractor
        spec = extractor.spec
        with Progress(count, "embed", enabled=job.progress) as progress:
            early = decoded_while_waiting(batches, model_ready, STARTUP_BUFFER_BYTES)
            log.debug("%d files decoded while the model started", sum(map(len, early)))
            for batch in itertools.chain(early, batches):
                columns = decode_columns(batch, spec.input_size)
                timer.add("decode", float(columns["seconds"].sum()))
                model_ready.result()  # raises what the model build raised
                with timer("infer"):
                    embedded = apply_model(columns, extractor, spec.dim)
                with timer("write"):
                    good, bad = commit(writer, embedded)
                summary.embedded += good
                summary.errors += bad
                progress.update(len(batch), errors=summary.errors)


def _warm_up(extractor: FeatureExtractor, timer: Phases) -> None:
    with timer("model"):
        import_tensorflow()
        extractor.warm_up()


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
