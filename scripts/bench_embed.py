"""Benchmark ``alexfeat embed`` end to end against the bound its two stages imply on this machine.

    python scripts/bench_embed.py [--small 1000,5000] [--large 200,1000] [--repeats 3] [--workdir DIR]
                                  [--precision float32 bfloat16] [--reference-python PYTHON_WITH_TORCH]
                                  [--source local|s3]

Writes two kinds of photo-like JPEGs (about 500x375 and 4000x3000), in sets of the sizes asked for, then
measures in the same run, with ``--arch torchvision --weights random`` (speed does not depend on the weights),
each repeat back to back (decode, then model and whole command per precision, reference; each with the set's files
in the page cache), ratios per repeat, then medians. The header says whether the CPU has native bfloat16, what
``--precision auto`` picks, and TensorFlow's 2048^3 matmul GFLOP/s in each precision (the bounds). Per precision:
- model-only images/s (the compiled inference path on uint8 batches);
- decode-only images/s (read + sha256 + decode + resize in the embed job's decode processes, one per core,
  from the first result on, over the set's first files up to 400 MB);
- the bound when both share the CPU: 1 / (1/model + 1/decode);
- end-to-end images/s of the whole ``alexfeat embed`` command (wall time, start-up included), and its ratio
  to the bound (median, and the lowest of the repeats); and the job alone (the summary's wall time: TensorFlow's
  import and the model build are in it, overlapped with decoding; Python and CLI start-up are not);
- the job's own split of its time (its summary's stages): decode seconds summed over the decode processes, and
  inference seconds in the main thread (``decode s``, ``infer s``): where decode s / workers exceeds infer s,
  decoding is the bottleneck;
- ``vs f32``: the whole command's images/s over float32's in the same repeat.

TensorFlow's import (~2.5 s of one core) is a fixed cost, so the whole-command ratio grows with the set size: the
default sizes give one set of each kind that start-up dominates (1,000 and 200 files, 15 and 10 s of work on 2
cores) and one of real size (5,000 and 1,000 files, about a minute each).
Each row also gives that cost as the whole command's seconds beyond the bound (``extra s``), and the set size
from which the ratio reaches 0.90 with that cost (``0.90 from``: 9 x extra x bound). With ``--reference-python``,
the plain PyTorch pipeline of ``torch_reference.py`` runs on the same sets, interleaved, as the baseline to beat.

With ``--source s3`` each set is also uploaded to an S3-compatible server started here on loopback (moto's
``ThreadedMotoServer``, ``pip install 'moto[server]' s3fs``; it holds the objects in memory, so keep the sets
small, e.g. ``--small 1000 --large 0``), and each repeat runs the whole command on ``s3://bench/<set>`` right after
the local run: ``s3/s`` and ``s3/local`` (the ratio per repeat, then the median). The server's own work (Python,
one thread per request) runs on the same cores as the job, which a real object store's does not.
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


def model_rate(extractor, batch_size: int, batches: int = 8) -> float:
    """Images/s of the compiled inference path on uint8 batches (after one untimed batch)."""
    size = extractor.spec.input_size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    extractor(batch)
    start = time.perf_counter()
    for _ in range(batches):
        extractor(batch)
    return batches * batch_size / (time.perf_counter() - start)


def decode_rate(entries: list, resize, workers: int) -> float:
    """Files/s of the embed job's decode processes over ``entries``, from the first result on (worker start-up is
    the job's, not the stage's)."""
    from extractor.embed.decode_stream import decode_stream
    from extractor.images.file_decoder import FileDecoder

    results = decode_stream(FileDecoder(resize), entries, workers, 1024)
    next(results)
    start = time.perf_counter()
    count = sum(1 for _ in results)
    return count / (time.perf_counter() - start)


def decode_sample(folder: Path, max_bytes: int = 400 * 2**20) -> list:
    """The first files of ``folder`` up to ``max_bytes`` (at least 64): a few seconds of decoding."""
    from extractor.images.discover import discover

    sample, held = [], 0
    for entry in discover(folder):
        if len(sample) >= 64 and held + entry.size > max_bytes:
            break
        sample.append(entry)
        held += entry.size
    return sample


def embed_once(folder: Path | str, out: Path, batch_size: int, precision: str) -> dict[str, float]:
    """Seconds of the whole ``alexfeat embed`` command (``whole``), of its job alone (``job``: the summary's wall
    time), and the summary's decode and infer stage seconds."""
    cmd = [
        sys.executable,
        "-m",
        "extractor.cli",
        "embed",
        str(folder),
        "-o",
        str(out),
        "--arch",
        "torchvision",
        "--weights",
        "random",
        "--batch-size",
        str(batch_size),
        "--precision",
        precision,
        "--no-progress",
    ]
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    output = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    whole = time.perf_counter() - start
    found = {key: re.search(rf"\b{key} ([0-9.]+)s", output) for key in ("wall", "decode", "infer")}
    seconds = {key: float(match.group(1)) if match else 0.0 for key, match in found.items()}  # a stage may not run
    return {"whole": whole, "job": seconds["wall"], "decode_s": seconds["decode"], "infer_s": seconds["infer"]}


def reference_once(python: str, folder: Path, batch_size: int, workers: int) -> float:
    """Images/s of the plain PyTorch pipeline (``torch_reference.py``) run by ``python``, whole run."""
    cmd = [
        python,
        str(Path(__file__).with_name("torch_reference.py")),
        str(folder),
        "--batch-size",
        str(batch_size),
        "--workers",
        str(workers),
    ]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def read_all(folder: Path) -> None:
    """Read every file of ``folder`` once, into the page cache where it fits. The decode rate is measured on files
    read from the cache, so the whole command must find them there too: a set partly evicted since its last run
    (5 GB of large photos) would otherwise measure the disk."""
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            while fh.read(8 * 2**20):
                pass


def measure(extractors: dict, folder: Path, count: int, out: Path, args, workers: int) -> dict[str, dict[str, float]]:
    """One row per precision: each repeat measures decode, then model and the whole command of each precision, and
    the reference, back to back, so that a machine whose speed drifts (shared CPUs) moves the baselines and the
    results together; ratios are taken per repeat, then medians. Each command starts with the set's files in the
    page cache."""
    sample = decode_sample(folder)
    resize = next(iter(extractors.values())).resize_spec
    rows: dict[str, list[dict[str, float]]] = {precision: [] for precision in extractors}
    for _ in range(args.repeats):
        read_all(folder)
        decode = decode_rate(sample, resize, workers)
        torch = None
        if args.reference_python:
            read_all(folder)
            torch = reference_once(args.reference_python, folder, args.batch_size, workers)
        float32_rate = None
        for precision, extractor in extractors.items():
            model = model_rate(extractor, args.batch_size)
            bound = 1.0 / (1.0 / model + 1.0 / decode)
            read_all(folder)
            run = embed_once(folder, out, args.batch_size, precision)
            row = {
                "model": model,
                "decode": decode,
                "bound": bound,
                "embed": count / run["whole"],
                "job": count / run["job"],
                "ratio": count / run["whole"] / bound,
                "job_ratio": count / run["job"] / bound,
                "extra": run["whole"] - count / bound,
                "decode_s": run["decode_s"],
                "infer_s": run["infer_s"],
            }
            if args.source == "s3":
                s3_whole = embed_once(f"s3://{BUCKET}/{folder.name}", out, args.batch_size, precision)["whole"]
                row["s3"], row["s3_ratio"] = count / s3_whole, run["whole"] / s3_whole
            if precision == "float32":
                float32_rate = row["embed"]
            if float32_rate:
                row["vs_f32"] = row["embed"] / float32_rate
            if torch is not None:
                row["torch"], row["vs_torch"] = torch, row["embed"] / torch
            rows[precision].append(row)
    result = {}
    for precision, runs in rows.items():
        medians = {key: statistics.median(row[key] for row in runs) for key in runs[0]}
        result[precision] = {**medians, "lowest": min(row["ratio"] for row in runs)}
    return result


BUCKET = "bench"


def start_s3():
    """An S3-compatible server on a free loopback port, reached through AWS_ENDPOINT_URL (the embed commands run
    as child processes inherit it), with a ``bench`` bucket."""
    import logging
    import socket

    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    fsspec.filesystem("s3").mkdir(BUCKET)
    return server


def upload(folder: Path) -> None:
    """The set's files as objects under ``s3://bench/<set>/`` (once per set)."""
    import fsspec

    fs = fsspec.filesystem("s3")
    if not fs.exists(f"{BUCKET}/{folder.name}"):
        fs.put(f"{folder}/", f"{BUCKET}/{folder.name}/", recursive=True)


def counts(text: str) -> list[int]:
    """``"1000,3000"`` → ``[1000, 3000]`` (zeros dropped)."""
    return [n for n in (int(part) for part in text.split(",")) if n > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=counts, default="1000,5000", help="sizes of the ~500x375 sets (0: none)")
    parser.add_argument("--large", type=counts, default="200,1000", help="sizes of the 4000x3000 sets (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the test images here between runs")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--source",
        choices=["local", "s3"],
        default="local",
        help="s3: also embed each set from a loopback S3 server (moto), beside the local run",
    )
    parser.add_argument(
        "--reference-python",
        default=None,
        metavar="PYTHON",
        help="a Python with torch, numpy and Pillow: also time scripts/torch_reference.py, the plain "
        "PyTorch pipeline, on each set (whole run, same decode processes)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from bench_model import tf_matmul_gflops

    from extractor.network.features import FeatureExtractor
    from extractor.network.precision import cpu_bfloat16_flags, resolve_precision
    from extractor.network.tf_runtime import import_tensorflow
    from extractor.parallel.stream import usable_cpus

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alexfeat-bench-"))
    workers = usable_cpus()
    flags = cpu_bfloat16_flags()
    print(
        f"CPU native bfloat16: {'yes (' + ', '.join(flags) + ')' if flags else 'no'}; "
        f"--precision auto picks {resolve_precision('auto')}"
    )
    server = start_s3() if args.source == "s3" else None
    import_tensorflow()
    gflops = tf_matmul_gflops(args.precision)
    print("TensorFlow matmul 2048^3: " + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in gflops.items()))
    extractors = {p: FeatureExtractor("random", arch="torchvision", precision=p) for p in args.precision}
    print(f"batch {args.batch_size}, {workers} cores, medians of {args.repeats} repeats (ratios per repeat)")
    print(
        f"{'set':<6} {'size':>10} {'n':>5} {'precision':<9} {'model/s':>8} {'decode/s':>9} {'bound/s':>8} "
        f"{'embed/s':>8} {'embed/bound':>11} {'lowest':>6} {'job/s':>7} {'job/bound':>9} {'decode s':>8} "
        f"{'infer s':>7} {'extra s':>8} {'0.90 from':>9} {'vs f32':>6}"
        + (f" {'torch/s':>8} {'embed/torch':>11}" if args.reference_python else "")
        + (f" {'s3/s':>7} {'s3/local':>8}" if server else "")
    )
    for name, sizes in (("small", args.small), ("large", args.large)):
        for count in sizes:
            folder = make_set(workdir, name, count)
            if server:
                upload(folder)
            results = measure(extractors, folder, count, workdir / f"emb-{name}", args, workers)
            width, height = SETS[name]
            for precision, r in results.items():
                reference = f" {r['torch']:>8.1f} {r['vs_torch']:>11.2f}" if args.reference_python else ""
                print(
                    f"{name:<6} {width:>5}x{height:<4} {count:>5} {precision:<9} {r['model']:>8.1f} "
                    f"{r['decode']:>9.1f} {r['bound']:>8.1f} {r['embed']:>8.1f} {r['ratio']:>11.2f} "
                    f"{r['lowest']:>6.2f} {r['job']:>7.1f} {r['job_ratio']:>9.2f} {r['decode_s']:>8.1f} "
                    f"{r['infer_s']:>7.1f} {r['extra']:>8.1f} {max(0.0, 9 * r['extra'] * r['bound']):>9.0f} "
                    f"{r.get('vs_f32', float('nan')):>6.2f}{reference}"
                    + (f" {r['s3']:>7.1f} {r['s3_ratio']:>8.2f}" if server else ""),
                    flush=True,
                )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    if server:
        server.stop()


if __name__ == "__main__":
    main()
