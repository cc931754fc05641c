"""Real test images written with Pillow: photos and every awkward case the decoder and the walker must handle.

Each ``make_*`` function writes one file (creating parent folders) and returns its path. The format follows the
file's suffix unless ``format`` is given (so a JPEG can be named ``.png``). Sizes are small so tests stay fast.
``make_awkward_tree`` builds a whole folder of these cases with the outcome each should have.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

EXIF_ORIENTATION = 0x0112

# Colours and values the single-purpose images use, so tests can state the expected pixels.
GRAY_LEVEL = 90  # the opaque half of make_la_png
RGBA_COLOR = (200, 40, 20)  # make_rgba_png's colour
PALETTE_COLORS = ((220, 30, 30), (30, 160, 40), (20, 40, 200))  # make_palette_png's stripes, top to bottom
GIF_FRAME_COLORS = ((230, 20, 20), (20, 20, 230), (20, 230, 20))  # make_animated's frames, first to last


def raw_name(folder: str | os.PathLike[str], name: bytes) -> str:
    """The path of a file named by raw bytes (e.g. Latin-1 ``b"caf\\xe9.jpg"``) in ``folder``, as Python holds it
    (undecodable bytes as surrogate escapes). Creating it fails where the file system insists on UTF-8 names."""
    return os.fsdecode(os.path.join(os.fsencode(folder), name))


def _prepare(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def photo_pixels(size: tuple[int, int] = (500, 375), seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 array of ``size`` (width, height): diagonal colour gradients, random filled shapes
    and mild noise. It has no symmetry, so a rotated or flipped copy differs clearly from it."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / width, 255 * y / height, 255 * (0.7 * x / width + 0.3 * (1 - y / height))], axis=-1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = min(width, height)
    for i in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(max(scale // 20, 1), max(scale // 5, 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if i % 2 else draw.rectangle
        shape((x0 - r, y0 - r // 2, x0 + r, y0 + r), fill=colour)
    # A dark block in the top-left corner marks "up" and "left" unambiguously.
    draw.rectangle((0, 0, width // 4, height // 6), fill=(10, 10, 10))
    return np.asarray(img)


def make_photo(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (500, 375),
    seed: int = 0,
    format: str | None = None,
    quality: int = 90,
) -> Path:
    """An RGB photo (``photo_pixels``) saved as JPEG, PNG, ... after the suffix, or as ``format``."""
    path = _prepare(path)
    Image.fromarray(photo_pixels(size, seed)).save(path, format=format, quality=quality)
    return path


def make_large_photo(
    path: str | os.PathLike[str], size: tuple[int, int] = (2800, 2100), seed: int = 0, quality: int = 90
) -> Path:
    """A large JPEG (default 5.9 MP), made quickly by upscaling a quarter-size ``photo_pixels``: smooth, like a
    camera photo whose detail is low for its pixel count."""
    path = _prepare(path)
    small = Image.fromarray(photo_pixels((size[0] // 4, size[1] // 4), seed))
    small.resize(size, Image.Resampling.BILINEAR).save(path, "JPEG", quality=quality)
    return path


def make_sideways_photo(
    path: str | os.PathLike[str], orientation: int = 6, size: tuple[int, int] = (500, 375), seed: int = 0
) -> Path:
    """A JPEG whose pixels are stored rotated, with the EXIF orientation tag (6 or 8) that displays them upright.

    Displayed upright it is ``make_photo(..., size, seed)``: ``size`` is the upright (width, height); the stored
    pixels are (height, width).
    """
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    path = _prepare(path)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(photo_pixels(size, seed)).transpose(stored).save(path, "JPEG", quality=90, exif=exif)
    return path


def make_grayscale(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A grayscale (mode ``L``) version of ``photo_pixels``, saved after the suffix."""
    path = _prepare(path)
    Image.fromarray(photo_pixels(size, seed)).convert("L").save(path)
    return path


def make_bilevel_png(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48)) -> Path:
    """A mode ``1`` (bilevel) PNG: left half black, right half white."""
    path = _prepare(path)
    img = Image.new("1", size, 0)
    img.paste(1, (size[0] // 2, 0, size[0], size[1]))
    img.save(path)
    return path


def make_la_png(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48)) -> Path:
    """A mode ``LA`` PNG: left half fully transparent black, right half opaque ``GRAY_LEVEL``."""
    path = _prepare(path)
    img = Image.new("LA", size, (0, 0))
    img.paste((GRAY_LEVEL, 255), (size[0] // 2, 0, size[0], size[1]))
    img.save(path)
    return path


def make_rgba_png(path: str | os.PathLike[str], alpha: int = 128, size: tuple[int, int] = (64, 48)) -> Path:
    """A uniform ``RGBA_COLOR`` PNG with the given alpha everywhere."""
    path = _prepare(path)
    Image.new("RGBA", size, (*RGBA_COLOR, alpha)).save(path)
    return path


def make_pa_tiff(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48)) -> Path:
    """A mode ``PA`` TIFF (palette + alpha): left half fully transparent, right half opaque ``PALETTE_COLORS[0]``."""
    path = _prepare(path)
    img = Image.new("PA", size, (0, 0))
    img.putpalette([c for colour in PALETTE_COLORS for c in colour])
    img.paste((0, 255), (size[0] // 2, 0, size[0], size[1]))
    img.save(path, "TIFF")
    return path


def make_palette_png(path: str | os.PathLike[str], transparent: bool = False, size: tuple[int, int] = (60, 48)) -> Path:
    """A mode ``P`` PNG of three horizontal stripes in ``PALETTE_COLORS``; with ``transparent`` the top stripe's
    palette index is the transparent one."""
    path = _prepare(path)
    width, height = size
    rows = np.repeat(np.arange(3, dtype=np.uint8), -(-height // 3))[:height]
    img = Image.frombytes("P", size, np.repeat(rows[:, None], width, axis=1).tobytes())
    img.putpalette([c for colour in PALETTE_COLORS for c in colour])
    img.save(path, **({"transparency": 0} if transparent else {}))
    return path


def make_cmyk_jpeg(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A CMYK JPEG of ``photo_pixels(size, seed)`` (Pillow's RGB → CMYK conversion, which it inverts exactly)."""
    path = _prepare(path)
    Image.fromarray(photo_pixels(size, seed)).convert("CMYK").save(path, "JPEG", quality=95)
    return path


def make_png16(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48)) -> Path:
    """A 16-bit grayscale PNG (mode ``I;16``): a horizontal ramp from 0 (left) to 65535 (right)."""
    path = _prepare(path)
    ramp = np.linspace(0, 65535, size[0]).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (size[1], 1))).save(path)
    return path


def make_tiff_i(path: str | os.PathLike[str], peak: int = 4000, size: tuple[int, int] = (64, 48)) -> Path:
    """A 32-bit integer TIFF (mode ``I``): a horizontal ramp from 0 (left) to ``peak`` (right)."""
    path = _prepare(path)
    ramp = np.linspace(0, peak, size[0]).round().astype(np.int32)
    Image.fromarray(np.tile(ramp, (size[1], 1))).save(path, "TIFF")
    return path


def make_tiff_f(path: str | os.PathLike[str], peak: float = 1.0, size: tuple[int, int] = (64, 48)) -> Path:
    """A 32-bit float TIFF (mode ``F``): a horizontal ramp from 0.0 (left) to ``peak`` (right)."""
    path = _prepare(path)
    ramp = np.linspace(0, peak, size[0]).astype(np.float32)
    Image.fromarray(np.tile(ramp, (size[1], 1))).save(path, "TIFF")
    return path


def make_animated(path: str | os.PathLike[str], size: tuple[int, int] = (48, 48), format: str | None = None) -> Path:
    """An animated image (GIF, APNG or WebP after the suffix) with one uniform frame per ``GIF_FRAME_COLORS``."""
    path = _prepare(path)
    frames = [Image.new("RGB", size, colour) for colour in GIF_FRAME_COLORS]
    frames[0].save(path, format=format, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def make_truncated_jpeg(path: str | os.PathLike[str], keep: float = 0.6, size: tuple[int, int] = (200, 150)) -> Path:
    """A photo JPEG cut after ``keep`` of its bytes (its header intact, the end of its scan data missing)."""
    path = _prepare(path)
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels(size)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_corrupt_png(path: str | os.PathLike[str], size: tuple[int, int] = (64, 48)) -> Path:
    """A PNG with a valid header whose compressed pixel data (IDAT) is overwritten with garbage."""
    path = _prepare(path)
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels(size)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 4
    data[start + 2 : start + 66] = bytes(range(64))
    path.write_bytes(bytes(data))
    return path


def make_empty_file(path: str | os.PathLike[str]) -> Path:
    """A zero-byte file."""
    path = _prepare(path)
    path.write_bytes(b"")
    return path


def make_text_file(path: str | os.PathLike[str], text: str = "these are my holiday notes, not a photo\n") -> Path:
    """A text file (give it an image name to test content sniffing)."""
    path = _prepare(path)
    path.write_text(text, encoding="utf-8")
    return path


def make_png_header(path: str | os.PathLike[str], width: int, height: int) -> Path:
    """A tiny (~60 byte) PNG whose header claims ``width`` x ``height`` RGB pixels but that holds almost no pixel
    data: a decompression bomb stand-in. Decoding it without the header check fails as truncated/corrupt."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path = _prepare(path)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


@dataclass
class AwkwardTree:
    """A folder of awkward cases and what embedding it must give (paths relative to ``root``, '/'-separated)."""

    root: Path
    good: list[str] = field(default_factory=list)  # decode fine; sorted as discover yields them
    errors: dict[str, str] = field(default_factory=dict)  # path → DecodeError kind
    ignored: list[str] = field(default_factory=list)  # present but never listed: hidden, not images, broken links

    @property
    def listed(self) -> list[str]:
        """Every path ``discover`` yields, in its order."""
        return sorted([*self.good, *self.errors])


def make_awkward_tree(root: str | os.PathLike[str]) -> AwkwardTree:
    """A small image tree (class-per-folder) holding every awkward case: names with spaces and Unicode, upper-case
    extensions, EXIF rotation, every mode, an animation, a JPEG named .png, bad files of each error kind, hidden
    files and folders, a non-image file, a symlinked file, a broken symlink and a symlink loop."""
    root = Path(root)
    tree = AwkwardTree(root=root)
    good = {
        "cats/photo 1.jpg": lambda p: make_photo(p, (160, 120), seed=1),
        "cats/chat été 猫.JPG": lambda p: make_photo(p, (120, 160), seed=2),
        "cats/sideways.jpg": lambda p: make_sideways_photo(p, 6, (160, 120), seed=3),
        "dogs/gray.png": make_grayscale,
        "dogs/rgba.png": make_rgba_png,
        "dogs/palette transparent.png": lambda p: make_palette_png(p, transparent=True),
        "dogs/cmyk.jpeg": make_cmyk_jpeg,
        "dogs/sixteen.png": make_png16,
        "dogs/anim.gif": make_animated,
        "dogs/jpeg named.png": lambda p: make_photo(p, (96, 64), seed=4, format="JPEG"),
        "float.tiff": make_tiff_f,
    }
    errors = {
        "bad/truncated.jpg": ("truncated", make_truncated_jpeg),
        "bad/empty.jpg": ("empty", make_empty_file),
        "bad/text.jpg": ("not_an_image", make_text_file),
        "bad/bomb.png": ("too_large", lambda p: make_png_header(p, 100_000, 100_000)),
    }
    for rel, make in good.items():
        make(root / rel)
    for rel, (kind, make) in errors.items():
        make(root / rel)
        tree.errors[rel] = kind
    ignored = {
        "notes.txt": make_text_file,
        ".hidden.jpg": make_photo,
        ".cache/inside.jpg": make_photo,
        "cats/.thumb.png": make_photo,
    }
    for rel, make in ignored.items():
        make(root / rel)
    os.symlink("photo 1.jpg", root / "cats/link to photo.jpg")
    os.symlink("missing.jpg", root / "cats/broken link.jpg")
    os.symlink("..", root / "cats/loop")
    tree.good = sorted([*good, "cats/link to photo.jpg"])
    tree.ignored = sorted([*ignored, "cats/broken link.jpg", "cats/loop"])
    return tree
