"""The embed job: list → plan → decode → infer → write. The job plans and commits; an engine runs the stages.

- an input source (:mod:`extractor.images.sources`: a folder, a manifest, an object-store prefix, tar shards)
  lists the images as entries (relative key, label, size, change token, where the bytes are);
- :func:`extractor.embed.resume.plan_resume` decides which are new or changed;
- an engine (:class:`extractor.embed.local.LocalEngine`, or :class:`extractor.embed.ray_engine.RayEngine` on a Ray
  cluster) decodes them (:class:`extractor.images.file_decoder.FileDecoder`: bytes read once through the source,
  hashed, decoded) and
  embeds batches (:class:`extractor.network.features.FeatureExtractor`), through the shared stages of
  :mod:`extractor.embed.stages`;
- :class:`extractor.store.DatasetWriter`, held by the job, appends atomic Parquet parts and records per-file errors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from extractor.embed.decode_stream import MAX_DECODE_SECONDS
from extractor.embed.local import LocalEngine
from extractor.embed.resume import ResumePlan, apply_plan, load_existing, plan_resume
from extractor.embed.settings import extractor_for
from extractor.embed.stages import Engine
from extractor.images.decode import DEFAULT_MAX_PIXELS
from extractor.images.discover import IMAGE_EXTENSIONS, FileEntry
from extractor.images.sources import Source, SourceError, open_source
from extractor.network.features import FeatureExtractor
from extractor.parallel.stream import usable_cpus
from extractor.store import EmbeddingMeta, ErrorRecord, open_for_writing, read_errors
from extractor.util.timing import Phases

log = logging.getLogger(__name__)
STAGES = ("discover", "plan", "model", "decode", "infer", "write")
STAGE_NOTES = {
    "model": "TensorFlow's start-up and the model build, while files decode",
    "decode": "summed over workers",
    "start": "starting or joining Ray",
    "cluster": "waiting for the cluster's embedded batches",
}
"""What a stage's time means, where its name does not say it (engines add their own stages)."""


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
    precision: str = ""  # how the network ran and why, e.g. "bfloat16 (auto: CPU has amx_bf16/avx512_bf16)"

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
        if not (self.changed or self.discovered or self.unchanged or self.skipped_errors):
            kinds = " ".join(sorted(IMAGE_EXTENSIONS))
            return [f"found no images (files ending {kinds}, any case), nothing to embed: check the input"]
        if not self.changed:
            return [f"up to date: unchanged {self.unchanged}{known}, nothing to embed"]
        where = f" (list them: alexfeat errors {out_dir})" if self.errors and out_dir else ""
        seconds = {name: value for name, value in self.stages.seconds.items() if value}  # stages this engine has
        stages = ", ".join(f"{name} {value:.1f}s" for name, value in seconds.items())
        notes = "; ".join(f"{name}: {STAGE_NOTES[name]}" for name in seconds if name in STAGE_NOTES)
        return [
            f"embedded {self.embedded}, unchanged {self.unchanged}, errors {self.errors}{where}"
            + known
            + (f", rows dropped {self.dropped}" if self.dropped else ""),
            f"wall {self.wall_seconds:.1f}s, {self.images_per_second:.1f} images/s; stages: {stages}"
            + (f" ({notes})" if notes else ""),
        ] + ([f"precision {self.precision}"] if self.precision and self.embedded else [])  # only when the network ran


@dataclass
class EmbedJob:
    """One ``alexfeat embed`` run over ``source`` into the dataset ``out_dir``.

    ``source``: an input source, or what ``open_source`` takes (a folder, ``s3://bucket/prefix``, tar shards)."""

    source: Source | str | os.PathLike[str]
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
    follow_outside: bool = True  # a folder source: follow symbolic links whose target is outside it
    progress: bool | None = None  # None: a bar on a terminal, periodic log lines otherwise
    engine: Engine = field(default_factory=LocalEngine)  # where decoding and inference run

    def __post_init__(self) -> None:
        if isinstance(self.source, (str, os.PathLike)):
            self.source = open_source(self.source, follow_outside=self.follow_outside)

    @property
    def input(self) -> Source:
        assert not isinstance(self.source, (str, os.PathLike))  # opened in __post_init__
        return self.source

    def metadata(self) -> EmbeddingMeta:
        """The extractor's settings with the input's root: what the dataset records."""
        return dataclasses.replace(self.extractor.spec, root=self.input.root)

    def run(self) -> EmbedSummary:
        meta = self.metadata()
        summary = EmbedSummary(meta=meta, precision=str(self.extractor.precision))
        start = time.perf_counter()
        timer = summary.stages
        with open_for_writing(self.out_dir, meta, overwrite=self.overwrite, rows_per_part=self.rows_per_part) as writer:
            unlisted: list[ErrorRecord] = []  # what could not be listed (a folder, a missing file): recorded
            with timer("discover"):
                entries = list(self.input.list(lambda rel, exc: unlisted.append(_unlisted(rel, exc))))
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
                self.engine.embed(self, plan.to_embed, writer, summary)
            with timer("write"):
                writer.flush()
        summary.wall_seconds = time.perf_counter() - start
        return summary

    def _plan(self, entries: list[FileEntry]) -> ResumePlan:
        """Compare with what the (already opened, so overwrite-cleared) dataset holds."""
        return plan_resume(
            entries,
            load_existing(self.out_dir),
            prune=self.prune,
            errors=read_errors(self.out_dir),
            retry_errors=self.retry_errors,
        )


def embed_folder(
    source: Source | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    weights: str | None = None,
    arch: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    resize: str | None = None,
    tta: str | None = None,
    precision: str = "auto",
    **options: Any,
) -> EmbedSummary:
    """Embed every image of ``source`` into the dataset ``out_dir`` (created; a rerun embeds only new and
    changed files), as ``alexfeat embed`` does. ``source``: a folder, an object-store URL (``s3://bucket/prefix``),
    tar shards (``"shards/{00000..00099}.tar"``), or a source object (``ManifestSource("list.csv")`` for
    ``--from-list``; see :mod:`extractor.images.sources`).

    ``weights``: ``"imagenet"``, a weights file or ``"random"`` (default: ``$ALEXFEAT_WEIGHTS`` or imagenet);
    ``arch``, ``layer``, ``pooling``, ``resize``, ``tta``: as :class:`FeatureExtractor` takes them (default: pool5,
    GeM, no test-time augmentation). Into an existing dataset, what is left out is taken from its metadata (a rerun
    needs no model options) and what differs from it is refused (:func:`extractor.embed.settings.extractor_for`).
    ``precision`` (``auto``, ``float32``, ``bfloat16``) is this run's, whatever the dataset holds (the two are
    compatible); the summary says which ran and why. ``options``: the
    fields of :class:`EmbedJob` (``batch_size``, ``workers``, ``rows_per_part``, ``max_pixels``,
    ``max_decode_seconds``, ``prune``, ``retry_errors``, ``overwrite``, ``follow_outside``, ``progress``,
    ``engine``: ``LocalEngine()`` or ``RayEngine(...)``). It
    starts decode processes: call it under ``if __name__ == "__main__":`` in a script.
    """
    if isinstance(source, (str, os.PathLike)):  # a missing folder or shard pattern fails before the model loads
        source = open_source(source, follow_outside=options.get("follow_outside", True))
    extractor = extractor_for(
        out_dir, weights, arch, layer, pooling, resize, tta, precision, overwrite=options.get("overwrite", False)
    )
    return EmbedJob(source, os.fspath(out_dir), extractor, **options).run()


def _unlisted(rel_path: str, exc: OSError) -> ErrorRecord:
    """The error record (without size: made again by each listing) of what a source could not list: a folder, a
    file that could not be stat'ed, a manifest's missing file, the rest of a truncated tar shard."""
    if isinstance(exc, SourceError):
        log.warning("skipping %s: %s", rel_path, exc.message)
        return ErrorRecord(rel_path, exc.kind, exc.message)
    log.warning("skipping %s: %s", rel_path, exc.strerror or exc)
    return ErrorRecord(rel_path, "unreadable", f"cannot list or stat it: {exc.strerror or exc}")
