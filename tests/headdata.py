"""Small labelled image folders with a learnable signal, and their embeddings, for the head/finetune tests.

Three visibly different families (the class names mix case on purpose: ``sorted()`` puts ``Stripes`` first):

- ``Stripes``: horizontal bands of two random warm colours;
- ``checks``: a blue/green checkerboard of random cell size;
- ``discs``: one bright disc on a dark background at a random place.

Each image varies with its seed (colours, sizes, positions, noise), so held-out images are new examples of the
same families. Embeddings come from the real pipeline (``EmbedJob``), by default with seeded random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("Stripes", "checks", "discs")
SIZE = (64, 48)


def class_image(label: str, seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    """One RGB image of the family ``label``."""
    rng = np.random.default_rng(seed)
    width, height = size
    if label == "Stripes":
        colours = [tuple(int(c) for c in rng.integers((150, 60, 0), (256, 160, 60))) for _ in range(2)]
        band = int(rng.integers(3, 9))
        rows = np.array([colours[(y // band) % 2] for y in range(height)], dtype=np.float64)
        pixels = np.repeat(rows[:, None, :], width, axis=1)
    elif label == "checks":
        cell = int(rng.integers(4, 10))
        y, x = np.mgrid[0:height, 0:width]
        on = ((y // cell + x // cell) % 2).astype(bool)[..., None]
        a = rng.integers((0, 100, 150), (60, 200, 256)).astype(np.float64)
        b = rng.integers((0, 150, 0), (60, 256, 90)).astype(np.float64)
        pixels = np.where(on, a, b)
    elif label == "discs":
        pixels = np.full((height, width, 3), rng.integers(0, 50), dtype=np.float64)
        img = Image.fromarray(pixels.astype(np.uint8))
        r = int(rng.integers(8, 18))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, int(rng.integers(150, 256))))
        pixels = np.asarray(img, dtype=np.float64)
    else:
        raise ValueError(label)
    noisy = pixels + rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_class_tree(
    root: str | os.PathLike[str], per_class: int, first_seed: int = 0, classes: tuple[str, ...] = CLASSES
) -> list[str]:
    """Write ``per_class`` JPEGs per class as ``root/LABEL/img_SEED.jpg``; returns their relative paths."""
    root = Path(root)
    paths = []
    for k, label in enumerate(classes):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed = first_seed + 1000 * k + i
            rel = f"{label}/img_{seed:05d}.jpg"
            class_image(label, seed).save(root / rel, quality=92)
            paths.append(rel)
    return paths


def embed_tree(
    images: str | os.PathLike[str], out: str | os.PathLike[str], pooling: str = "avg", weights: str = "random"
) -> Path:
    """Embed ``images`` into ``out`` with the real pipeline (default: seeded random torchvision weights)."""
    from extractor.embed.job import EmbedJob
    from extractor.network.features import FeatureExtractor

    EmbedJob(str(images), str(out), FeatureExtractor(weights, pooling=pooling), batch_size=16, progress=False).run()
    return Path(out)
