"""Benchmark ``alexfeat embed`` end to end against the bound its two stages imply on this machine.

    python scripts/bench_embed.py [--small 1000,3000] [--large 200,600] [--repeats 3] [--workdir DIR]
                                  [--reference-python PYTHON_WITH_TORCH]

Writes two kinds of photo-like JPEGs (about 500x375 and 4000x3000), in sets of the sizes asked for, then
measures in the same run, with ``--arch torchvision --weights random`` (speed does not depend on the weights):
- model-only images/s (the compiled inference path on uint8 batches);
- decode-only images/s (read + sha256 + decode + resize in the embed job's decode processes, one per core,
  from the first result on);
- the bound when both share the CPU: 1 / (1/model + 1/decode);
- end-to-end images/s of the whole ``alexfeat embed`` command (wall time, start-up included), and its ratio
  to the bound; and the job alone (the summary's wall time: TensorFlow's import and the model build are in it,
  overlapped with decoding; Python and CLI start-up are not). Medians over ``--repeats``.

TensorFlow's import (~3 s of one core) is a fixed cost, so the whole-command ratio grows with the set size.
Each row also gives that cost as the whole command's seconds beyond the bound (``extra s``), and the set size
from which the ratio reaches 0.90 with that cost (``0.90 from``: 9 x extra x bound). With ``--reference-python``,
the plain PyTorch pipeline of ``torch_reference.py`` runs on the same sets, interleaved, as the baseline to beat.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SETS = {"small": (500, 375), "large": (4000, 3000)}


def photo(size: tuple[int, int], rng: np.random.Generator, grain: np.ndarray) -> Image.Image:
    """Smooth colour fields plus fine grain: compresses like a photo (not like flat colour or pure noise); a
    4000x3000 one is about 5 MB at quality 90, on the heavy side of camera JPEGs. ``grain`` (int16, H x W x 1) is
    shared by a set to save time; the colour fields make every image different."""
    width, height = size
    coarse = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_set(workdir: Path, name: str, count: int) -> Path:
    """A folder of exactly ``count`` photos of set ``name``: hard links to the first ``count`` of a pool of
    generated JPEGs kept in ``workdir`` (so runs with other counts reuse them)."""
    size = SETS[name]
    pool, folder = workdir / f"{name}-pool", workdir / f"{name}-{count}"
    pool.mkdir(parents=True, exist_ok=True)
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    grain = (rng.standard_normal((height, width, 1), dtype=np.float32) * 12).round().astype(np.int16)
    for i in range(count):
        source = pool / f"photo_{i:05d}.jpg"
        if not source.exists():
            photo(size, np.random.default_rng(i), grain).save(source, quality=90)
        if not (folder / source.name).exists():
            os.link(source, folder / source.name)
    return folder


def model_rate(extractor, batch_size: int, repeats: int) -> float:
    size = extractor.spec.input_size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    extractor(batch)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            extractor(batch)
        rates.append(4 * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def decode_rate(folder: Path, resize, workers: int, repeats: int) -> float:
    from extractor.decode_stream import decode_stream
    from extractor.discover import discover
    from extractor.file_decoder import FileDecoder

    entries = list(discover(folder))
    decoder = FileDecoder(resize)
    rates = []
    for _ in range(repeats):
        results = decode_stream(decoder, entries, workers, 1024)
        next(results)  # steady state: from the first result on (worker start-up is the job's, not the stage's)
        start = time.perf_counter()
        count = sum(1 for _ in results)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def embed_rate(folder: Path, count: int, out: Path, batch_size: int, repeats: int) -> tuple[float, float]:
    """Median images/s of the whole command, and of its job alone (the summary's wall time)."""
    cmd = [sys.executable, "-m", "extractor.cli", "embed", str(folder), "-o", str(out), "--arch", "torchvision",
           "--weights", "random", "--batch-size", str(batch_size), "--no-progress"]
    rates, job_rates = [], []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        output = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rates.append(count / (time.perf_counter() - start))
        job_rates.append(float(re.search(r"wall ([0-9.]+)s", output).group(1)))
    return statistics.median(rates), count / statistics.median(job_rates)


def reference_rate(python: str, folder: Path, batch_size: int, workers: int, repeats: int) -> float:
    """Median images/s of the plain PyTorch pipeline (``torch_reference.py``) run by ``python``, whole run."""
    cmd = [python, str(Path(__file__).with_name("torch_reference.py")), str(folder), "--batch-size", str(batch_size),
           "--workers", str(workers)]
    return statistics.median(float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
                             for _ in range(repeats))


def counts(text: str) -> list[int]:
    """``"1000,3000"`` → ``[1000, 3000]`` (zeros dropped)."""
    return [n for n in (int(part) for part in text.split(",")) if n > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=counts, default="1000,3000", help="sizes of the ~500x375 sets (0: none)")
    parser.add_argument("--large", type=counts, default="200,600", help="sizes of the 4000x3000 sets (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the test images here between runs")
    parser.add_argument("--reference-python", default=None, metavar="PYTHON",
                        help="a Python with torch, numpy and Pillow: also time scripts/torch_reference.py, the plain "
                             "PyTorch pipeline, on each set (whole run, same decode processes)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from extractor.features import FeatureExtractor
    from extractor.stream import usable_cpus
    from extractor.tf_runtime import import_tensorflow

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alexfeat-bench-"))
    workers = usable_cpus()
    import_tensorflow()
    extractor = FeatureExtractor("random", arch="torchvision")
    model = model_rate(extractor, args.batch_size, args.repeats)
    print(f"model only (compiled, batch {args.batch_size}): {model:.1f} images/s on {workers} cores")
    print(f"{'set':<6} {'size':>10} {'n':>5} {'decode/s':>9} {'bound/s':>8} {'embed/s':>8} {'embed/bound':>11} "
          f"{'job/s':>7} {'job/bound':>9} {'extra s':>8} {'0.90 from':>9}"
          + (f" {'torch/s':>8} {'embed/torch':>11}" if args.reference_python else ""))
    for name, sizes in (("small", args.small), ("large", args.large)):
        decode = None
        for count in sizes:
            folder = make_set(workdir, name, count)
            if decode is None:  # a stage's steady rate does not depend on the set size: measured once per set
                decode = decode_rate(folder, extractor.resize_spec, workers, args.repeats)
                bound = 1.0 / (1.0 / model + 1.0 / decode)
            end_to_end, job = embed_rate(folder, count, workdir / f"emb-{name}", args.batch_size, args.repeats)
            width, height = SETS[name]
            extra = count / end_to_end - count / bound  # seconds the whole command takes beyond the bound
            reference = ""
            if args.reference_python:
                torch_rate = reference_rate(args.reference_python, folder, args.batch_size, workers, args.repeats)
                reference = f" {torch_rate:>8.1f} {end_to_end / torch_rate:>11.2f}"
            print(f"{name:<6} {width:>5}x{height:<4} {count:>5} {decode:>9.1f} {bound:>8.1f} {end_to_end:>8.1f} "
                  f"{end_to_end / bound:>11.2f} {job:>7.1f} {job / bound:>9.2f} {extra:>8.1f} "
                  f"{max(0.0, 9 * extra * bound):>9.0f}{reference}", flush=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
