"""A plain PyTorch embedding pipeline, the baseline ``bench_embed.py --reference-python`` compares alexfeat with.

    python scripts/torch_reference.py IMAGES_DIR [--batch-size 32] [--workers N]

What the embed issue describes as the reference: Pillow with ``draft()`` in worker processes (a
``multiprocessing.Pool``), torchvision's AlexNet features in ``channels_last`` with random weights, global average
pooling and L2 normalisation; shorter side 256, centre 224. It does less than ``alexfeat embed`` per file (no
sha256, no EXIF orientation, no mode handling, no Parquet, no resume) and keeps nothing. Needs only torch, numpy
and Pillow (not alexfeat, not torchvision), so it runs in any environment that has them. Prints the images/s of
the whole run (imports included) as its last line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SIZE, CROP = 256, 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def features() -> torch.nn.Module:
    """torchvision's ``alexnet().features`` (64-192-384-256-256), written out."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    ).eval()


def decode(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (SIZE, SIZE))
            img = img.convert("RGB")
            w, h = img.size
            scale = SIZE / min(w, h)
            tw, th = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
            left, top = (tw - CROP) // 2, (th - CROP) // 2
            box = (left / scale, top / scale, (left + CROP) / scale, (top + CROP) / scale)
            return np.asarray(img.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box))
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.images_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    model = features().to(memory_format=torch.channels_last)
    done = 0
    with torch.inference_mode(), multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        batch: list[np.ndarray] = []
        for pixels in pool.imap(decode, paths, chunksize=16):
            if pixels is not None:
                batch.append(pixels)
            if len(batch) == args.batch_size:
                done += embed(model, batch)
                batch = []
        if batch:
            done += embed(model, batch)
    seconds = time.perf_counter() - START
    print(f"torch {torch.__version__}: {done} images in {seconds:.1f}s, {done / seconds:.1f} images/s", file=sys.stderr)
    print(f"{done / seconds:.2f}")


def embed(model: torch.nn.Module, batch: list[np.ndarray]) -> int:
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
    x = ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)
    vectors = torch.nn.functional.normalize(model(x).mean(dim=(2, 3)), dim=1)
    return len(vectors)


if __name__ == "__main__":
    main()
