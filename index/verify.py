"""Verify candidate near-duplicate pairs on the decoded images: is one image, up to a crop, the other?

An embedding says what a photo shows, so different photos of one thing (catalogue shots of one motorbike model, two
stop signs) score as high as a copy. A copy also has the same pixels: up to a crop, a resize, a re-encode and a
change of brightness or contrast. The score of a pair is the Pearson correlation of grayscale thumbnails of the
two images at their best alignment (1: the same picture up to brightness and contrast), found in two steps:

1. coarse, 24 × 24: every crop of one image covering 85, 90, 95 or 100 % of each side, at offsets 2.5 % apart,
   against the whole other image, both ways round;
2. fine, 64 × 64, for pairs whose coarse score reaches ``REFINE_FROM``: the best coarse crop moved and scaled by
   half a step (27 crops), against the whole other image at the finer size.

Pairs below ``REFINE_FROM`` keep their coarse score. Each image is decoded once with alexfeat's decoder (EXIF
orientation, modes, size limit), squashed to ``BASE`` × ``BASE`` grayscale; the crops are taken from that.
Measured on the dev set (``scripts/bench_dedup.py``): half-size re-encodes, 90 % crops and brightness changes of 60
photos score at least 0.947, different photos of one class at most 0.967, most far lower.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from extractor.images.decode import DEFAULT_MAX_PIXELS, DecodeError, ResizeSpec, decode_image
from extractor.images.sources import is_url, read_stored
from extractor.util.progress import Progress

log = logging.getLogger(__name__)

BASE = 128
COARSE = 24
FINE = 64
SCALES = (1.0, 0.95, 0.9, 0.85)
STEP = 0.025
REFINE_FROM = 0.9
READ_AHEAD = 64
"""Images read at once (an object store's concurrently) before they are decoded."""

Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the image


def _coarse_boxes() -> list[Box]:
    boxes = []
    for scale in SCALES:
        offsets = np.linspace(0.0, 1.0 - scale, int(round((1.0 - scale) / STEP)) + 1)
        boxes += [(x, y, x + scale, y + scale) for x in offsets.tolist() for y in offsets.tolist()]
    return boxes


BOXES = _coarse_boxes()
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)


def _fine_boxes(box: Box) -> list[Box]:
    """The 27 crops around ``box``: its side and offsets moved by half a coarse step, kept inside the image."""
    half = STEP / 2
    left, top, right, _ = box
    boxes = []
    for d_side, dx, dy in itertools.product((-half, 0.0, half), repeat=3):
        side = min(1.0, right - left + d_side)
        x = min(max(left + dx, 0.0), 1.0 - side)
        y = min(max(top + dy, 0.0), 1.0 - side)
        boxes.append((x, y, x + side, y + side))
    return boxes


def thumbnail(image: Image.Image, box: Box, size: int) -> np.ndarray:
    """The ``box`` of a grayscale ``image`` at ``size`` × ``size``, flattened, zero mean and unit length."""
    width, height = image.size
    region = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
    vector = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=region), dtype=np.float32).ravel()
    vector = vector - vector.mean()
    return vector / max(float(np.linalg.norm(vector)), 1e-3)  # a flat image correlates with nothing


@dataclass
class PairVerifier:
    """Scores pairs of images under ``root`` (given by their stored ``paths``; read through the dataset's source:
    a folder, tar shards or an object store); images are read and decoded once each."""

    root: str | os.PathLike[str]
    paths: Sequence[str]
    max_pixels: int = DEFAULT_MAX_PIXELS
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it could not be decoded
    _images: dict[int, Image.Image | None] = field(default_factory=dict, repr=False)

    def image(self, row: int) -> Image.Image | None:
        """Row ``row``'s image as ``BASE`` × ``BASE`` grayscale; None if it cannot be decoded (the reason is
        recorded in ``unreadable``). Colour is left out: measured, it lowered copies' scores (brightness changes
        clip channels unevenly) more than it separated lookalikes."""
        if row not in self._images:
            self.load([row])
        return self._images[row]

    def load(self, rows: Sequence[int]) -> None:
        """Read the images of ``rows`` not loaded yet, all at once (concurrently from an object store), and decode
        them."""
        todo = [row for row in dict.fromkeys(rows) if row not in self._images]
        for row, data in zip(todo, read_stored(self.root, [self.paths[row] for row in todo])):
            rel = self.paths[row]
            try:
                if isinstance(data, OSError):
                    raise DecodeError("unreadable", f"cannot read it: {data}")
                pixels = decode_image(data, ResizeSpec("squash", BASE), self.max_pixels).pixels
                self._images[row] = Image.fromarray(pixels).convert("L")
            except DecodeError as exc:
                self.unreadable[rel] = str(exc)
                log.warning("cannot verify %s: %s", rel, exc)
                self._images[row] = None

    def scores(self, a: np.ndarray, b: np.ndarray, progress: bool | None = None) -> np.ndarray:
        """The score of each pair (``a[i]``, ``b[i]``) of rows; NaN where an image cannot be decoded."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        rows = np.unique(np.concatenate([a, b]))
        whole = np.zeros((len(rows), COARSE * COARSE), np.float32)
        readable = np.zeros(len(rows), bool)
        with Progress(len(rows) if len(rows) > 200 else 0, "verify", enabled=progress) as bar:
            for k, row in enumerate(rows.tolist()):
                if k % READ_AHEAD == 0:
                    self.load(rows[k : k + READ_AHEAD].tolist())
                image = self.image(row)
                if image is not None:
                    whole[k] = thumbnail(image, WHOLE, COARSE)
                    readable[k] = True
                bar.update(1)
        pos_a, pos_b = np.searchsorted(rows, a), np.searchsorted(rows, b)
        best = np.full(len(a), -np.inf, np.float32)
        best_box = np.zeros(len(a), np.int64)
        a_cropped = np.zeros(len(a), bool)
        by_a, by_b = _pairs_by(pos_a, len(rows)), _pairs_by(pos_b, len(rows))
        for k, row in enumerate(rows.tolist()):  # the crops of one image at a time: memory stays small
            if not readable[k] or not (len(by_a[k]) or len(by_b[k])):
                continue
            image = self.image(row)
            assert image is not None
            crops = np.stack([thumbnail(image, box, COARSE) for box in BOXES])
            for pairs, others, cropped in ((by_a[k], pos_b, True), (by_b[k], pos_a, False)):
                if len(pairs):  # einsum: BLAS threads cost more than these small products on a busy machine
                    sims = np.einsum("pd,bd->pb", whole[others[pairs]], crops)
                    top, arg = sims.max(axis=1), sims.argmax(axis=1)
                    better = top > best[pairs]
                    best[pairs[better]], best_box[pairs[better]] = top[better], arg[better]
                    a_cropped[pairs[better]] = cropped
        best[~(readable[pos_a] & readable[pos_b])] = np.nan
        for i in np.flatnonzero(best >= REFINE_FROM).tolist():
            src, dst = (a[i], b[i]) if a_cropped[i] else (b[i], a[i])
            best[i] = self._fine(int(src), int(dst), BOXES[best_box[i]])
        return best

    def _fine(self, src: int, dst: int, box: Box) -> float:
        source, target = self.image(src), self.image(dst)
        assert source is not None and target is not None
        whole = thumbnail(target, WHOLE, FINE)
        return float(max(thumbnail(source, near, FINE) @ whole for near in _fine_boxes(box)))


def _pairs_by(positions: np.ndarray, count: int) -> list[np.ndarray]:
    """For each of ``count`` images, the pair numbers whose side is that image."""
    order = np.argsort(positions, kind="stable")
    bounds = np.searchsorted(positions[order], np.arange(count + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(count)]


def images_root(
    recorded: str | None,
    override: str | os.PathLike[str] | None = None,
    recorded_in: str = "the embeddings",
    or_else: str | None = None,
) -> str:
    """Where a dataset's images are: ``override`` or the ``recorded`` root (``recorded_in``: what recorded it, for
    the message): a folder that must exist, or an object-store URL (not contacted here). Otherwise an
    AlexfeatError naming the way out: ``--images-root``, or ``or_else``."""
    from extractor.errors import AlexfeatError

    way_out = "pass --images-root with the folder that was embedded" + (f" ({or_else})" if or_else else "")
    if override is None and recorded is None:
        raise AlexfeatError(f"{recorded_in} records no images folder (written from Python without one): {way_out}")
    root = os.fspath(override) if override is not None else str(recorded)
    if not is_url(root) and not os.path.isdir(root):
        source = "given with --images-root" if override is not None else f"recorded in {recorded_in}"
        raise AlexfeatError(f"the images folder {root} ({source}) does not exist here: {way_out}")
    return root
