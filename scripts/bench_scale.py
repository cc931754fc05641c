"""Benchmark the scale-out paths on this machine: the embed engines, and the sharded index build.

    python scripts/bench_scale.py [--images 5000] [--repeats 1] [--vectors 1000000] [--dim 256] [--shards 4]
                                  [--factory auto] [--workdir DIR] [--skip-embed] [--skip-index]

1. Engines: the same folder of ~500x375 photo-like JPEGs (``bench_embed.py``'s) through
   ``alexfeat embed --engine local`` and ``--engine ray`` (a local Ray instance started by the command, as a
   user's first run would), ``--arch torchvision --weights random`` (speed does not depend on the weights),
   back to back per repeat: whole-command images/s, the ratio ray/local, and Ray's start-up seconds (the job's
   ``start`` stage: joining or starting Ray and planning the dataset).
2. Index: ``--vectors`` clustered unit vectors written as an embeddings dataset, then ``index build`` one-shot and
   ``--shards N`` (each in a fresh process): build seconds, peak RSS of the process, recall@10 (as index.json
   records it), single-thread-batch search QPS over 1,000 queries with the tuned parameters, and the index's
   bytes per vector on disk.
Medians over the repeats; the machine is shared, so compare the ratios, which are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_embed import make_set  # noqa: E402


def embed_once(folder: Path, out: Path, engine: str) -> tuple[float, float, float]:
    """(whole-command seconds, the job's wall seconds, its ``start`` stage seconds) of one embed."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "extractor.cli", "embed", str(folder), "-o", str(out), "--arch", "torchvision"]
    cmd += ["--weights", "random", "--no-progress", "--engine", engine]
    start = time.perf_counter()
    output = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    wall = float(re.search(r"wall ([0-9.]+)s", output).group(1))
    started = re.search(r"start ([0-9.]+)s", output)
    return seconds, wall, float(started.group(1)) if started else 0.0


def bench_engines(workdir: Path, images: int, repeats: int) -> None:
    folder = make_set(workdir, "small", images)
    rows: dict[str, list[tuple[float, float, float]]] = {"local": [], "ray": []}
    for _ in range(repeats):
        for engine in rows:
            rows[engine].append(embed_once(folder, workdir / f"emb-{engine}", engine))
    med = {e: [statistics.median(r[i] for r in runs) for i in range(3)] for e, runs in rows.items()}
    print(f"embed, {images} photos 500x375, medians of {repeats}")
    print(f"{'engine':8} {'command s':>10} {'images/s':>9} {'job/s':>7} {'start s':>8}")
    for engine, (seconds, wall, started) in med.items():
        print(f"{engine:8} {seconds:10.1f} {images / seconds:9.1f} {images / wall:7.1f} {started:8.1f}")
    ratios = [local[0] / ray[0] for local, ray in zip(rows["local"], rows["ray"])]
    print(f"ray/local images/s: {statistics.median(ratios):.2f} (per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")


BUILD = """
import json, resource, sys, time
import numpy as np
from index.build import build_index_dir
from index.sharded import build_sharded_index_dir
from index.search import Searcher
emb, out, shards, factory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
start = time.perf_counter()
if shards:
    info = build_sharded_index_dir(emb, out, shards, factory).info
else:
    info = build_index_dir(emb, out, factory).info
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
searcher = Searcher(out)
queries = np.load(sys.argv[5])
searcher.search_vectors(queries[:10], 10)
start = time.perf_counter()
searcher.search_vectors(queries, 10)
qps = len(queries) / (time.perf_counter() - start)
print(json.dumps({"seconds": seconds, "rss": rss, "recall": info["recall_at_10"], "qps": qps,
                  "factory": info["factory"], "params": info["search_params"]}))
"""


def bench_index(workdir: Path, vectors: int, dim: int, shards: int, factory: str) -> None:
    from extractor.store import DatasetWriter, EmbeddingMeta
    from index.indexdir import INDEX_FILE, IVFDATA_FILE

    emb = workdir / f"vectors-{vectors}x{dim}"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    if not emb.exists():
        meta = EmbeddingMeta("torchvision", "random", "0" * 64, "pool5", "gem", 224, "squash224", dim, "/bench")
        with DatasetWriter(emb, meta) as writer:
            for start in range(0, vectors, 50_000):
                n = min(50_000, vectors - start)
                x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                writer.add(
                    {
                        "path": [f"c/{i:09d}.jpg" for i in range(start, start + n)],
                        "label": ["c"] * n,
                        "sha256": np.zeros((n, 32), np.uint8),
                        "size": np.ones(n, np.int64),
                        "mtime_ns": np.ones(n, np.int64),
                        "width": np.ones(n, np.int32),
                        "height": np.ones(n, np.int32),
                        "embedding": x,
                    }
                )
    queries = workdir / "queries.npy"
    q = centres[rng.integers(0, len(centres), 1000)] + 0.6 * rng.standard_normal((1000, dim), np.float32)
    np.save(queries, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    print(f"\nindex build, {vectors:,} clustered {dim}-d vectors, --factory {factory}")
    print(f"{'build':12} {'seconds':>8} {'peak RSS':>9} {'recall@10':>9} {'QPS':>7} {'bytes/vec':>9}  factory, params")
    for label, count in (("one-shot", 0), (f"{shards} shards", shards)):
        out = workdir / f"index-{count}"
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-c", BUILD, str(emb), str(out), str(count), factory, str(queries)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        files = out / json.loads((out / "index.json").read_text())["generation"]
        size = sum((files / name).stat().st_size for name in (INDEX_FILE, IVFDATA_FILE) if (files / name).exists())
        print(
            f"{label:12} {r['seconds']:8.1f} {r['rss'] / 2**30:8.2f}G {r['recall']:9.3f} {r['qps']:7.0f} "
            f"{size / vectors:9.1f}  {r['factory']}, {r['params']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--factory", default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keep images and vectors here between runs")
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alexfeat-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_embed:
        bench_engines(workdir, args.images, args.repeats)
    if not args.skip_index:
        bench_index(workdir, args.vectors, args.dim, args.shards, args.factory)


if __name__ == "__main__":
    main()
