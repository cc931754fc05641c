"""Benchmark AlexNet inference on this machine against its own matrix-multiply speed.

Measures, in one run: numpy/OpenBLAS sgemm GFLOP/s (2048^3 float32, all cores), the bound it implies in
images/s (sgemm GFLOP/s / conv GFLOP per image), and images/s at batch 1, 16 and 64 for ``model.predict`` and
for the compiled path the embed job uses (:class:`extractor.network.features.FeatureExtractor`). Speed does not
depend on the weights, so random weights are used. Medians over repeats; ratios to the bound.

    python scripts/bench_model.py [--arch torchvision caffe] [--repeats 5]
    python scripts/bench_model.py --arch caffe --variant pooling=rmac --variant tta=flip

Each ``--variant key=value[,key=value]`` (keys: pooling, tta) adds a table of the compiled path's images/s at
batch 32 for the default settings and each variant, their repeats interleaved (so a shared machine's load falls
on all alike), with the ratio to the default: the throughput cost of R-MAC or test-time augmentation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an n x n x n float32 matrix product through numpy's BLAS."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def images_per_second(fn, batch: np.ndarray, repeats: int, min_images: int = 64) -> float:
    """Median images/s of ``fn(batch)`` (each repeat runs at least ``min_images`` images)."""
    fn(batch)  # warm-up / tracing
    calls = max(1, min_images // len(batch))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn(batch)
        rates.append(calls * len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


def compare_variants(arch: str, variants: list[str], repeats: int, batch_size: int = 32) -> None:
    """images/s of the compiled path for the default settings and each variant, repeats interleaved."""
    from extractor.network.features import FeatureExtractor

    settings = [("default", {})] + [(v, dict(kv.split("=", 1) for kv in v.split(","))) for v in variants]
    extractors = [FeatureExtractor("random", arch=arch, **options) for _, options in settings]
    size = extractors[0].spec.input_size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    rates: list[list[float]] = [[] for _ in settings]
    for extractor in extractors:
        extractor(batch)  # build and trace
    for _ in range(repeats):
        for rate, extractor in zip(rates, extractors):
            start = time.perf_counter()
            extractor(batch)
            rate.append(batch_size / (time.perf_counter() - start))
    base = statistics.median(rates[0])
    print(f"{arch}, batch {batch_size}, median of {repeats} interleaved repeats")
    print(f"{'settings':<24} {'images/s':>9} {'x default':>9}")
    for (name, _), rate in zip(settings, rates):
        print(f"{name:<24} {statistics.median(rate):>9.1f} {statistics.median(rate) / base:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["torchvision", "caffe"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", action="append", default=[], help="e.g. pooling=rmac or tta=flip")
    args = parser.parse_args()
    if args.variant:
        compare_variants(args.arch[0], args.variant, args.repeats)
        return

    from extractor.network.archs import flops_per_image
    from extractor.network.features import FeatureExtractor

    gflops = sgemm_gflops()
    print(f"sgemm 2048^3 float32: {gflops:.1f} GFLOP/s on {os.cpu_count()} cores")
    print(
        f"{'arch':<12} {'GFLOP/img':>9} {'bound':>7} {'batch':>5} {'predict':>9} {'compiled':>9} "
        f"{'predict/bound':>13} {'compiled/bound':>14}"
    )
    for arch in args.arch:
        extractor = FeatureExtractor("random", arch=arch)
        model = extractor.model  # uint8 in; predict on the same graph for a like-for-like comparison
        per_image = flops_per_image(arch) / 1e9
        bound = gflops / per_image
        rng = np.random.default_rng(0)
        size = extractor.spec.input_size
        for batch_size in args.batches:
            batch = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
            predict = images_per_second(
                lambda b, model=model: model.predict(b, verbose=0, batch_size=len(b)), batch, args.repeats
            )
            compiled = images_per_second(extractor, batch, args.repeats)
            print(
                f"{arch:<12} {per_image:>9.3f} {bound:>7.1f} {batch_size:>5} {predict:>9.1f} {compiled:>9.1f} "
                f"{predict / bound:>13.2f} {compiled / bound:>14.2f}"
            )


if __name__ == "__main__":
    main()
