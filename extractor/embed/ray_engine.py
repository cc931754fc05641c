"""The Ray Data engine: the embed job's stages on a Ray cluster (``alexfeat embed --engine ray``).

The driver (this process) plans as the local engine does (discover, resume) and commits: it holds the dataset's
writer, so parts are written atomically under the same names, in one place, and a killed job leaves only complete
parts. In between, Ray Data runs the shared stages:

- ``from_items``: the planned entries (relative key, where the bytes are, size, change token);
- decode in tasks (``map_batches`` with a function): bytes read once, sha256, decoded (``FileDecoder``), as
  ``decode_columns``; a file that cannot be decoded becomes an error row of its batch, never a failed task;
- inference in ``map_batches`` with a callable class under ``ActorPoolStrategy``: each actor builds the model once
  in ``__init__`` from the dataset's metadata (weights resolved and checked on its node; a Keras model is never
  pickled), TensorFlow's threads set to the actor's CPUs;
- the driver turns each embedded batch into rows and error records (``stages.commit``); the embedding column is
  built as ``fixed_size_list<float32>`` by ``store.to_table``, never Ray's tensor extension type.

Images must be readable from every node: at the same absolute paths (a shared file system), or from an object
store (``s3://``...: each node then needs fsspec's package and credentials); so must a weights file.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from extractor.embed.stages import commit
from extractor.errors import AlexfeatError
from extractor.images.batches import Columns, apply_model, decode_columns, entries_of, entry_columns
from extractor.images.decode import ResizeSpec
from extractor.images.discover import FileEntry
from extractor.images.file_decoder import FileDecoder
from extractor.parallel.ray_cluster import connect, import_ray
from extractor.store import DatasetWriter
from extractor.util.progress import Progress

if TYPE_CHECKING:
    from extractor.embed.job import EmbedJob, EmbedSummary

log = logging.getLogger(__name__)

DRIVER_BATCH = 1024
"""Rows the driver commits at a time: its per-batch Python costs (ids, Arrow conversion) amortised over ~1,000
rows commit ~3x as many rows/s as over the actors' 32 (measured: 20,000 vs 6,300 rows/s on a loaded 2-core
machine), so one driver keeps up with a few hundred cores."""
DECODE_CPUS = 0.5
INFER_SHARE = 0.75
"""(With ``DECODE_CPUS``.) Decoding a 500x375 JPEG costs about a third of its inference (measured: 380 vs 122
images/s per core), so by default actors reserve three quarters of the CPUs and a decode task half a CPU: on 2
CPUs, one actor of 1.5 CPUs (TensorFlow on 2 threads, as the local engine's) beside one decode task."""
DECODE_RETRIES = 2
"""Times a decode task is run again after its worker process died (a node lost, or a file that crashes it)."""


@dataclass
class RayEngine:
    """Decode in Ray tasks, embed in ``num_actors`` actors of ``cpus_per_actor`` CPUs each.

    ``address``: None starts a local Ray instance (or uses the one this process already started), ``auto``
    joins the cluster this machine belongs to, ``ray://HOST:10001`` connects through Ray Client. ``num_actors``
    None: one actor per ``cpus_per_actor`` CPUs of ``INFER_SHARE`` of the cluster (the rest decodes), at least one.
    Each decode task reserves ``DECODE_CPUS``; an actor's TensorFlow gets ``ceil(cpus_per_actor)`` threads.
    """

    address: str | None = None
    num_actors: int | None = None
    cpus_per_actor: float = 1.5
    name: str = "ray"

    def embed(self, job: EmbedJob, todo: list[FileEntry], writer: DatasetWriter, summary: EmbedSummary) -> None:
        ray = import_ray()
        timer = summary.stages
        with timer("start"):
            started = connect(ray, self.address)
        try:
            with timer("start"):
                actors = self.num_actors or max(
                    1, int(ray.cluster_resources().get("CPU", 1) * INFER_SHARE // self.cpus_per_actor)
                )
                batches = self._pipeline(ray, job, todo, actors)
            with Progress(len(todo), "embed", enabled=job.progress) as progress:
                for batch in _timed(batches, timer, "cluster"):
                    timer.add("decode", float(batch["seconds"].sum()))
                    with timer("write"):
                        good, bad = commit(writer, batch)
                    summary.embedded += good
                    summary.errors += bad
                    progress.update(good + bad, errors=summary.errors)
        except ray.exceptions.RayError as exc:
            raise AlexfeatError(
                f"the Ray job failed after {summary.embedded + summary.errors} files: {_last_line(exc)}. The "
                "finished batches are kept: run the same command again to embed the rest"
            ) from None
        finally:
            if started:
                ray.shutdown()

    def _pipeline(self, ray: Any, job: EmbedJob, todo: list[FileEntry], actors: int) -> Iterator[Columns]:
        """The Ray Data plan from the entries to embedded batches, consumed (streamed) by the driver."""
        spec = job.extractor.spec
        context = ray.data.DataContext.get_current()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notice that the progress bars are off
        context.enable_progress_bars = False  # the driver shows its own, in images/s
        columns = entry_columns(todo)
        items = [dict(zip(columns, row)) for row in zip(*(columns[name].tolist() for name in columns))]
        ds = ray.data.from_items(items)
        with warnings.catch_warnings():
            # Ray 2.60 has no named option for a task's retries; ``ray_remote_args_fn`` (deprecated, removed in
            # 2.64: the extra pins 2.60) sets them. A file that ends its worker process (a crash in an image
            # library) then fails its task a bounded number of times, not forever (Ray Data's default); options
            # given this way also keep Ray from fusing the decoding into the inference actors, so decoding
            # scales over the cluster's CPUs on its own.
            warnings.filterwarnings("ignore", "`ray_remote_args_fn` is deprecated")
            ds = ds.map_batches(
                functools.partial(decode_batch, resize=spec.resize, max_pixels=job.max_pixels),
                batch_size=job.batch_size,
                batch_format="numpy",
                num_cpus=DECODE_CPUS,
                ray_remote_args_fn=_decode_task_options,
            )
        ds = ds.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "metadata": job.metadata().to_dict(),
                "threads": math.ceil(self.cpus_per_actor),
            },
            batch_size=job.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=self.cpus_per_actor,
        )
        return iter(ds.iter_batches(batch_size=max(DRIVER_BATCH, job.batch_size), batch_format="numpy"))


def _decode_task_options() -> dict[str, Any]:
    return {"max_retries": DECODE_RETRIES}


def decode_batch(batch: Columns, resize: str, max_pixels: int) -> Columns:
    """A Ray decode task: entries (``entry_columns``) → ``decode_columns`` (pixels, or each file's error)."""
    spec = ResizeSpec.parse(resize)
    decoder = FileDecoder(spec, max_pixels)
    return decode_columns(decoder.many(entries_of(batch)), spec.output_size)


class Embedder:
    """A Ray actor's model: built once from the dataset's metadata, then ``apply_model`` on each batch."""

    def __init__(self, metadata: dict[str, Any], threads: int) -> None:
        from extractor.network.features import FeatureExtractor
        from extractor.network.spec import EmbeddingMeta
        from extractor.network.tf_runtime import import_tensorflow

        import_tensorflow(threads)
        meta = EmbeddingMeta.from_dict(metadata)
        # The driver's resolved precision, which the parts record (not each node's own "auto").
        self.extractor = FeatureExtractor.from_metadata(meta, precision=meta.precision)
        self.extractor.warm_up()

    def __call__(self, batch: Columns) -> Columns:
        return apply_model(batch, self.extractor, self.extractor.spec.dim)


def _last_line(exc: BaseException) -> str:
    """The last line of an error's text (Ray's task errors end with the original exception)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _timed(batches: Iterator[Columns], timer: Any, name: str) -> Iterator[Columns]:
    """Pass ``batches`` on, timing the waits for each under ``name`` (the driver waits while the cluster works)."""
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        timer.add(name, time.perf_counter() - start)
        if batch is None:
            return
        yield {key: np.asarray(value) for key, value in batch.items()}
