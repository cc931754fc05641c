"""Benchmark AlexNet inference on this machine against its own matrix-multiply speed, in float32 and bfloat16.

Says whether the CPU computes bfloat16 natively (``avx512_bf16``/``amx_bf16``) and what ``--precision auto``
picks, then measures, in one run: numpy/OpenBLAS sgemm GFLOP/s (2048^3 float32, all cores), TensorFlow's
2048^3 matmul GFLOP/s in float32 and in bfloat16 (oneDNN, the engine the model runs on), the bound each implies in
images/s (matmul GFLOP/s / conv GFLOP per image), and images/s at batch 1, 16 and 64 for ``model.predict`` and
for the compiled path the embed job uses (:class:`extractor.network.features.FeatureExtractor`), per precision.
Repeats of the two precisions are interleaved (a shared machine's drift moves both). Speed does not depend on the
weights, so random weights are used. Medians over repeats; ratios to each precision's own bound, and bfloat16
images/s over float32 images/s.

    python scripts/bench_model.py [--arch torchvision caffe] [--precision float32 bfloat16] [--repeats 5]
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


def tf_matmul_gflops(dtypes: list[str], n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Median GFLOP/s of an n x n x n TensorFlow matrix product per dtype, repeats interleaved."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(0, 0))
    b = tf.random.stateless_normal((n, n), seed=(0, 1))
    products = {dtype: tf.function(lambda x, y: tf.matmul(x, y)) for dtype in dtypes}
    pairs = {dtype: (tf.cast(a, dtype), tf.cast(b, dtype)) for dtype in dtypes}
    for dtype in dtypes:
        products[dtype](*pairs[dtype]).numpy()  # warm-up / tracing
    times: dict[str, list[float]] = {dtype: [] for dtype in dtypes}
    for _ in range(repeats):
        for dtype in dtypes:
            start = time.perf_counter()
            products[dtype](*pairs[dtype]).numpy()
            times[dtype].append(time.perf_counter() - start)
    return {dtype: 2 * n**3 / statistics.median(spent) / 1e9 for dtype, spent in times.items()}


def images_per_second(fns: dict, batch: np.ndarray, repeats: int, min_images: int = 64) -> dict:
    """Median images/s of each ``fns[key](batch)``, repeats interleaved (each runs at least ``min_images``)."""
    for fn in fns.values():
        fn(batch)  # warm-up / tracing
    calls = max(1, min_images // len(batch))
    rates: dict = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn(batch)
            rates[key].append(calls * len(batch) / (time.perf_counter() - start))
    return {key: statistics.median(values) for key, values in rates.items()}


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
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", action="append", default=[], help="e.g. pooling=rmac or tta=flip")
    args = parser.parse_args()
    if args.variant:
        compare_variants(args.arch[0], args.variant, args.repeats)
        return

    from extractor.network.archs import INPUT_SIZE, flops_per_image
    from extractor.network.features import FeatureExtractor
    from extractor.network.precision import cpu_bfloat16_flags, resolve_precision
    from extractor.network.tf_runtime import import_tensorflow

    flags = cpu_bfloat16_flags()
    print(
        f"CPU native bfloat16: {'yes (' + ', '.join(flags) + ')' if flags else 'no'}; "
        f"--precision auto picks {resolve_precision('auto')}"
    )
    import_tensorflow()
    print(f"numpy sgemm 2048^3 float32: {sgemm_gflops():.1f} GFLOP/s on {os.cpu_count()} cores")
    gflops = tf_matmul_gflops(args.precision)
    print("TensorFlow matmul 2048^3: " + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in gflops.items()))
    print(
        f"{'arch':<12} {'precision':<9} {'GFLOP/img':>9} {'bound':>7} {'batch':>5} {'predict':>9} {'compiled':>9} "
        f"{'predict/bound':>13} {'compiled/bound':>14} {'vs float32':>10}"
    )
    for arch in args.arch:
        per_image = flops_per_image(arch) / 1e9
        extractors = {p: FeatureExtractor("random", arch=arch, precision=p) for p in args.precision}
        fns = {}
        for p, extractor in extractors.items():
            model = extractor.model  # uint8 in; predict on the same graph for a like-for-like comparison
            fns[p, "predict"] = lambda b, model=model: model.predict(b, verbose=0, batch_size=len(b))
            fns[p, "compiled"] = extractor
        rng = np.random.default_rng(0)
        size = INPUT_SIZE[arch]
        for batch_size in args.batches:
            batch = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
            rates = images_per_second(fns, batch, args.repeats)
            for p in args.precision:
                bound = gflops[p] / per_image
                predict, compiled = rates[p, "predict"], rates[p, "compiled"]
                base = rates.get(("float32", "compiled"))
                print(
                    f"{arch:<12} {p:<9} {per_image:>9.3f} {bound:>7.1f} {batch_size:>5} {predict:>9.1f} "
                    f"{compiled:>9.1f} {predict / bound:>13.2f} {compiled / bound:>14.2f}"
                    f" {compiled / base if base else float('nan'):>10.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
