"""Write a small example image tree from the sample photos bundled with scikit-image.

    python scripts/make_examples.py examples/images

Makes one folder per class (class-per-folder, as ``alexfeat train`` expects), each photo with a few variants
(mirror, crops, grayscale, a sideways copy with an EXIF orientation tag) so that search, dedup and heads have
something to find, plus one damaged file that the embed job records as an error. The photos are scikit-image's
own sample data (public domain or freely licensed; see ``skimage/data/README.txt``), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = {
    "animals": ["chelsea", "horse"],
    "vehicles": ["rocket", "motorcycle_left", "motorcycle_right"],
    "people": ["astronaut", "camera"],
    "space": ["hubble_deep_field", "moon"],
    "textures": ["brick", "grass", "gravel"],
    "food": ["coffee"],
}


def load_sample(name: str) -> Image.Image | None:
    """A bundled scikit-image sample as an RGB (or L) PIL image; None if this version lacks it."""
    from skimage import data

    try:
        array = getattr(data, name)()
    except Exception:  # not bundled in this version (would need a download)
        return None
    if array.dtype != np.uint8:
        array = (255 * (array.astype(np.float64) / max(float(array.max()), 1.0))).astype(np.uint8)
    return Image.fromarray(array)


def variants(image: Image.Image, rng: np.random.Generator) -> dict[str, Image.Image]:
    """The photo and a few edits of it: mirror, two random crops and grayscale."""
    width, height = image.size
    out = {"original": image, "mirror": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "gray": image.convert("L")}
    for i in range(2):
        w, h = int(width * rng.uniform(0.6, 0.85)), int(height * rng.uniform(0.6, 0.85))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        out[f"crop{i}"] = image.crop((x, y, x + w, y + h))
    return out


def write_sideways(image: Image.Image, path: Path) -> None:
    """Store the photo rotated with an EXIF orientation tag (6) that turns it upright again when applied."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    count = 0
    for label, names in CLASSES.items():
        folder = args.out_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            image = load_sample(name)
            if image is None:
                continue
            for variant, edited in variants(image, rng).items():
                edited.convert("RGB" if edited.mode != "L" else "L").save(folder / f"{name} {variant}.jpg", quality=90)
                count += 1
            write_sideways(image, folder / f"{name} sideways.jpg")
            count += 1
    damaged = args.out_dir / "food" / "damaged.jpg"
    data = (args.out_dir / "food" / "coffee original.jpg").read_bytes()
    damaged.write_bytes(data[: len(data) // 3])  # a truncated JPEG: recorded in _errors.parquet
    print(f"wrote {count} example images (+1 damaged file) in {len(CLASSES)} classes under {args.out_dir}")


if __name__ == "__main__":
    main()
