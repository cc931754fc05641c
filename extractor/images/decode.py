"""One image file → RGB uint8 pixels at the network's input size.

``decode_image`` decodes by content (not extension), refuses images over ``max_pixels`` from the header before any
pixel is allocated, decodes large JPEGs in the DCT domain (``draft``), applies the EXIF orientation, turns every
Pillow mode into RGB and resizes with Pillow's bilinear filter as the reference pipelines do. Every failure is a
``DecodeError`` whose ``kind`` names the error class (the ``error`` column of ``_errors.parquet``).

Pillow's own decompression-bomb guard is a process-wide limit (``Image.MAX_IMAGE_PIXELS``) that warns above it and
raises above twice it. Since this module enforces ``max_pixels`` itself, ``decode_image`` adjusts that guard in two
documented, process-wide ways: it adds a warnings filter that ignores ``DecompressionBombWarning`` (only images that
``decode_image`` refuses anyway can trigger it), and it raises (never lowers) ``Image.MAX_IMAGE_PIXELS`` to
``max_pixels`` when a caller allows more than Pillow's default, so that Pillow's secondary checks (TIFF tiles, GIF
frames) stay active at the caller's limit. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set: a truncated file is
an error, never a partial decode.
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from extractor.errors import AlexfeatError

DEFAULT_MAX_PIXELS = 89_478_485
"""Pillow's default ``MAX_IMAGE_PIXELS``: about 0.25 GiB of 24-bit pixels."""

DECODE_ERROR_KINDS = frozenset(
    {"empty", "not_an_image", "truncated", "corrupt", "too_large", "unreadable", "unsupported"}
)
"""The values ``DecodeError.kind`` takes."""

# Content formats accepted, whatever the file is named (a multi-picture JPEG opens as "JPEG" and reports "MPO").
# Restricting Image.open to these keeps exotic plugins (EPS would run Ghostscript) away from untrusted files.
_WANTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "AVIF")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# Signatures of the formats above: a file that starts with one but that Pillow cannot identify is a damaged image.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

_EXIF_ORIENTATION = 0x0112
# EXIF orientation → the transpose that displays the stored pixels upright (as ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

_IGNORE_BOMB_WARNING = ("ignore", None, Image.DecompressionBombWarning, None, 0)  # a warnings.filters entry


@functools.cache
def _formats() -> tuple[str, ...]:
    """The wanted formats this Pillow build can open (AVIF needs Pillow 11.2 or later)."""
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


class DecodeError(AlexfeatError):
    """An image file that cannot be decoded; ``kind`` is one of ``DECODE_ERROR_KINDS``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        # Keeps ``kind`` when the error crosses a process boundary (multiprocessing pickles exceptions).
        return (type(self), (self.kind, str(self)))


_SPEC_RE = re.compile(r"(squash|shorter)(\d+)(?:-center(\d+))?")
_SPEC_FORMS = (
    "'squash256-center227' (resize to 256x256 ignoring aspect, centre crop 227), "
    "'shorter256-center224' (shorter side to 256 keeping aspect, centre crop 224) or "
    "'squash227' (resize straight to 227x227)"
)


@dataclass(frozen=True)
class ResizeSpec:
    """How a decoded image becomes the square network input.

    ``squash``: resize to ``size`` x ``size`` ignoring the aspect ratio (the caffe AlexNet recipe), then centre
    crop ``crop`` if given. ``shorter``: resize so the shorter side is ``size`` keeping the aspect ratio (the long
    side truncated to an integer, as torchvision's ``Resize`` does), then centre crop ``crop`` (required).
    """

    mode: str
    size: int
    crop: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("squash", "shorter"):
            raise AlexfeatError(f"unknown resize mode {self.mode!r}; use {_SPEC_FORMS}")
        if self.size < 1:
            raise AlexfeatError(f"resize {self}: the size must be at least 1; use {_SPEC_FORMS}")
        if self.crop is not None and not 1 <= self.crop <= self.size:
            raise AlexfeatError(f"resize {self}: the crop must be between 1 and the resize size; use {_SPEC_FORMS}")
        if self.mode == "shorter" and self.crop is None:
            raise AlexfeatError(f"resize {self}: 'shorter' needs a centre crop to give a square; use {_SPEC_FORMS}")

    @classmethod
    def parse(cls, text: str) -> ResizeSpec:
        """Parse ``squash256-center227``, ``shorter256-center224`` or ``squash227``."""
        match = _SPEC_RE.fullmatch(text.strip())
        if match is None:
            raise AlexfeatError(f"invalid resize policy {text!r}; use {_SPEC_FORMS}")
        mode, size, crop = match.groups()
        return cls(mode, int(size), int(crop) if crop else None)

    def __str__(self) -> str:
        return f"{self.mode}{self.size}" + (f"-center{self.crop}" if self.crop is not None else "")

    @property
    def output_size(self) -> int:
        """Side of the square output."""
        return self.crop if self.crop is not None else self.size

    def resize(self, img: Image.Image) -> Image.Image:
        """Resize ``img`` (any size) and centre crop it to ``output_size`` squared, with Pillow's bilinear filter.

        The crop is done inside ``Image.resize`` through its ``box`` argument: the same filter taps as resizing the
        whole image and cropping after (Pillow clamps taps to the image, not to the box), at a fraction of the
        cost; float rounding moves about 0.1 % of the values by 1. Crop offsets round half to even, as
        torchvision's ``CenterCrop`` does: 14 for 256 → 227, 16 for 256 → 224.
        """
        width, height = img.size
        if self.mode == "squash":
            target_w = target_h = self.size
        elif width <= height:
            target_w, target_h = self.size, int(self.size * height / width)
        else:
            target_w, target_h = int(self.size * width / height), self.size
        out = self.output_size
        if (target_w, target_h) == (out, out) == (width, height):
            return img
        left, top = round((target_w - out) / 2), round((target_h - out) / 2)
        sx, sy = width / target_w, height / target_h
        box = (left * sx, top * sy, (left + out) * sx, (top + out) * sy)
        return img.resize((out, out), Image.Resampling.BILINEAR, box=box)


@dataclass
class DecodedImage:
    """Decoded pixels at the output size and the original size of the image."""

    pixels: np.ndarray  # uint8, (S, S, 3), RGB, C-contiguous
    width: int  # of the original image, after EXIF orientation (not after draft or resize)
    height: int


def decode_image(
    source: str | os.PathLike[str] | bytes,
    resize: ResizeSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode one image (a path or the file's bytes) to RGB uint8 pixels of ``resize.output_size`` squared.

    The format comes from the content (JPEG, PNG, GIF, BMP, TIFF, WebP, AVIF), never from the name; animated
    images give their first frame. Images with more than ``max_pixels`` pixels are refused from the header. JPEGs
    are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least ``resize.size``. The EXIF
    orientation is applied. Modes become RGB as follows:

    - ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``: Pillow's conversion (grayscale is resized before it becomes RGB);
    - with alpha (``RGBA``, ``LA``, ``PA``, ``P`` with transparency, premultiplied ones): composited over WHITE;
    - ``I;16*`` (16-bit): 0..65535 scaled to 0..255;
    - ``I`` (32-bit integer): scaled so the image's own maximum is 255 when it exceeds 255, else taken as 0..255;
      negative values become 0;
    - ``F`` (float): taken as 0..1 when its maximum is at most 1.0, else as 0..255; clipped, NaN becomes 0.

    Raises ``DecodeError`` for anything that cannot give trustworthy pixels: ``empty``, ``not_an_image``,
    ``truncated``, ``corrupt``, ``too_large``, ``unreadable`` (missing or unreadable file) or ``unsupported``.
    """
    _adjust_pillow_guard(max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DecodeError("empty", "the file is empty (0 bytes)")
        fp: str | io.BytesIO = io.BytesIO(source)
    else:
        fp = os.fspath(source)
    try:
        with Image.open(fp, formats=_formats()) as img:
            return _decode_opened(img, resize, max_pixels)
    except DecodeError:
        raise
    except Exception as exc:  # Pillow plugins raise many types on malformed input: all of them are bad files.
        raise _classify(exc, source, max_pixels) from exc


def _decode_opened(img: Image.Image, resize: ResizeSpec, max_pixels: int) -> DecodedImage:
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(f"the image is {width}x{height} = {width * height:,} pixels", max_pixels)
    if img.format in _JPEG_FORMATS:
        img.draft("RGB", (resize.size, resize.size))
    img.load()
    orientation = _orientation(img)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    img = _to_rgb_or_l(img)
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    img = resize.resize(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    pixels = np.array(img, dtype=np.uint8)
    return DecodedImage(pixels=pixels, width=width, height=height)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent, unreadable or invalid: a damaged EXIF block does not lose the
    pixels)."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception:
        return 1


def _to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Turn any mode into ``RGB`` or ``L`` (``L`` is resized first and made RGB last: a third of the work)."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in ("RGBA", "RGBa", "PA", "P"):
        return _over_white(img.convert("RGBA") if mode != "RGBA" else img, "RGB")
    if mode in ("LA", "La"):
        return _over_white(img.convert("LA") if mode != "LA" else img, "L")
    if mode.startswith("I;16"):
        values = np.asarray(img).astype(np.uint32)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "I":
        ints = np.asarray(img).astype(np.int64)
        peak = int(ints.max(initial=0))
        scaled = ints * (255.0 / peak) if peak > 255 else ints
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    if mode == "F":
        floats = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if floats.size and floats.max() <= 1.0:
            floats = floats * 255.0
        return Image.fromarray(np.clip(np.rint(floats), 0, 255).astype(np.uint8))
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise DecodeError("unsupported", f"images in Pillow mode {mode} cannot be converted to RGB") from exc


def _over_white(img: Image.Image, base_mode: str) -> Image.Image:
    """Composite ``img`` (RGBA or LA) over a white background of ``base_mode``."""
    background = Image.new(base_mode, img.size, (255, 255, 255) if base_mode == "RGB" else 255)
    background.paste(img.convert(base_mode), (0, 0), img.getchannel("A"))
    return background


def _adjust_pillow_guard(max_pixels: int) -> None:
    """Raise Pillow's process-wide bomb limit to ``max_pixels`` if it is lower (never lower it), and make sure
    ``DecompressionBombWarning`` is ignored (checked per call, as ``warnings.catch_warnings`` blocks that were
    open when this module was imported drop filters added then)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        Image.MAX_IMAGE_PIXELS = max_pixels
    if _IGNORE_BOMB_WARNING not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _too_large(what: str, max_pixels: int | None) -> DecodeError:
    limit = f"the limit of {max_pixels:,} pixels" if max_pixels else "the pixel limit"
    return DecodeError("too_large", f"{what}, over {limit}; raise --max-pixels to embed it")


def _classify(exc: Exception, source: str | os.PathLike[str] | bytes, max_pixels: int | None) -> DecodeError:
    """Map an exception raised while opening or decoding ``source`` to a ``DecodeError``."""
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):  # Pillow's own check, at twice its limit (≥ max_pixels)
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"the image is {int(claimed[1]):,} pixels" if claimed else "the image is too large"
        return _too_large(what, max_pixels)
    if isinstance(exc, MemoryError):
        return DecodeError("too_large", "not enough memory to decode the image")
    if isinstance(exc, UnidentifiedImageError):
        return _unidentified(source)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return DecodeError("unreadable", f"cannot read the file: {exc.strerror or exc}")
    if isinstance(exc, OSError) and exc.errno is not None:
        return DecodeError("unreadable", f"cannot read the file: {exc.strerror or exc}")
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return DecodeError("truncated", f"the file is truncated: {text}")
    return DecodeError("corrupt", f"the image data is corrupt: {text}")


def _unidentified(source: str | os.PathLike[str] | bytes) -> DecodeError:
    """An unidentified file is ``empty``, a damaged image (a known signature) or ``not_an_image``."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            head = bytes(source[:16])
        else:
            with open(source, "rb") as fh:
                head = fh.read(16)
    except OSError as exc:
        return DecodeError("unreadable", f"cannot read the file: {exc.strerror or exc}")
    if not head:
        return DecodeError("empty", "the file is empty (0 bytes)")
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return DecodeError("corrupt", "the image header is damaged: the file starts like an image but cannot be read")
    return DecodeError(
        "not_an_image", f"not an image in a supported format ({', '.join(f for f in _formats() if f != 'DIB')})"
    )
