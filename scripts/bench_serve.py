"""Benchmark ``alexfeat serve``: queries/s and latency by id and by image at several concurrencies, on loopback.

    python scripts/bench_serve.py [--images DIR | --count 600] [--weights random] [--concurrency 1,4,16]
                                  [--seconds 8] [--max-requests 3000] [--workdir DIR]

In one run, on the same photos (``--images``, or ``--count`` generated 500x375 JPEGs as in bench_embed.py):
1. the baseline: ``alexfeat embed`` on the photos, before and after the queries (their mean is the baseline, as the
   load of a shared machine drifts): images/s of the whole command, of the job (its summary) and after start-up
   (photos / (job wall - model stage), the strictest of the three);
2. ``alexfeat index build``, then ``alexfeat serve --port 0`` as its own process;
3. for each kind (by id, by image) and concurrency: that many httpx async clients on 127.0.0.1 sending queries
   back to back for ``--seconds`` (at most ``--max-requests``, after a short warm-up): queries/s, p50 and p99
   latency, and for image queries the server's inference batch sizes over the run (from ``/api/info``).
Targets (2 cores): by id p50 < 10 ms at concurrency 1; by image at 16 clients >= 0.7 x embed's images/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))
from bench_embed import make_set  # noqa: E402  (the same generated photos)

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def alexfeat(*args: object) -> str:
    """Run the CLI as a user does; returns its output (raises with it on failure)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "extractor.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO
    )
    if done.returncode:
        raise SystemExit(f"alexfeat {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def embed_rates(folder: Path, out: Path, weights: str, arch: str, count: int) -> tuple[float, float, float]:
    """``alexfeat embed`` images/s: whole command (wall, start-up included), the job (its summary), and after
    start-up (count / (job wall - model stage): decoding during the model build counts as free, so this
    overstates the steady rate a little)."""
    start = time.perf_counter()
    output = alexfeat("embed", folder, "-o", out, "--weights", weights, "--arch", arch, "--no-progress")
    whole = time.perf_counter() - start
    found = re.search(r"wall ([\d.]+)s, ([\d.]+) images/s; stages: .*?model ([\d.]+)s", output)
    if found is None:
        raise SystemExit(f"cannot read embed's summary:\n{output}")
    wall, rate, model = (float(v) for v in found.groups())
    return count / whole, rate, count / max(wall - model, 1e-9)


def photos(args: argparse.Namespace, workdir: Path) -> list[Path]:
    if args.images is not None:
        files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise SystemExit(f"no photos under {args.images}")
        return files
    return sorted(make_set(workdir, "small", args.count).glob("*.jpg"))


def start_server(index_dir: Path, max_pixels: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "extractor.cli", "serve", str(index_dir), "--port", "0"]
    proc = subprocess.Popen(cmd + ["--max-pixels", str(max_pixels)], stdout=subprocess.PIPE, text=True, env=env)
    for _ in range(2):
        line = proc.stdout.readline()
        found = re.search(r"search page (http://\S+/)", line)
        if found:
            url = found[1]
            break
    else:
        raise SystemExit("alexfeat serve did not start")
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(url + "api/health", timeout=5).raise_for_status()
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("alexfeat serve did not answer") from None
            time.sleep(0.1)


async def load(
    url: str, kind: str, targets: list, clients: int, seconds: float, max_requests: int
) -> tuple[list[float], float]:
    """Latencies (s) of the queries ``clients`` concurrent clients completed within ``seconds`` after a warm-up,
    and the seconds they took (the warm-up not included)."""
    latencies: list[float] = []
    budget = iter(range(max_requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(target: object) -> None:
            if kind == "id":
                response = await client.get("/api/search", params={"id": target, "k": 10})
            else:
                name, data = target
                response = await client.post("/api/search", files={"image": (name, data)}, data={"k": "10"})
            response.raise_for_status()

        await asyncio.gather(*(one(targets[i % len(targets)]) for i in range(2 * clients)))  # warm-up
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline and next(budget, None) is not None:
                start = time.perf_counter()
                await one(rng.choice(targets))
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(i) for i in range(clients)))
        return latencies, time.perf_counter() - start


def print_embed(when: str, rates: tuple[float, float, float]) -> None:
    whole, job, steady = rates
    print(
        f"alexfeat embed ({when}): {whole:.1f} images/s whole command, {job:.1f} the job, {steady:.1f} after start-up"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=None, help="photos to embed and query (default: generated)")
    parser.add_argument("--count", type=int, default=600, help="generated 500x375 photos when --images is not given")
    parser.add_argument("--weights", default="random", help="weights for embed (speed does not depend on them)")
    parser.add_argument("--arch", default="torchvision")
    parser.add_argument("--concurrency", default="1,4,16", help="client counts")
    parser.add_argument("--kinds", default="id,image", help="query kinds to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--max-requests", type=int, default=3000, help="per measurement")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated photos here between runs")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        workdir = args.workdir or work / "photos"
        files = photos(args, workdir)
        root = args.images or files[0].parent
        print(f"photos: {len(files)} under {root}; weights {args.weights}, arch {args.arch}; cores {os.cpu_count()}")
        before = embed_rates(root, work / "emb", args.weights, args.arch, len(files))
        print_embed("before", before)
        alexfeat("index", "build", work / "emb", "-o", work / "idx", "--no-progress")

        import pyarrow.parquet as pq

        ids = pq.read_table(work / "idx" / "ids.parquet", columns=["id"]).column("id").to_pylist()
        uploads = [(f.name, f.read_bytes()) for f in files[:200]]
        proc, url = start_server(work / "idx", max_pixels=10**9)
        try:
            print(f"{'query':<6} {'clients':>7} {'queries':>8} {'q/s':>8} {'p50 ms':>8} {'p99 ms':>8}  batch sizes")
            image_rates = {}
            for kind, targets in (("id", ids), ("image", uploads)):
                if kind not in args.kinds.split(","):
                    continue
                for clients in levels:
                    sizes_before = Counter(httpx.get(url + "api/info").json()["batches"])
                    lat, elapsed = asyncio.run(load(url, kind, targets, clients, args.seconds, args.max_requests))
                    sizes_after = Counter(httpx.get(url + "api/info").json()["batches"])
                    rate = len(lat) / elapsed
                    sizes = sizes_after - sizes_before
                    mean = sum(int(s) * n for s, n in sizes.items()) / max(sum(sizes.values()), 1)
                    shown = ", ".join(f"{s}x{n}" for s, n in sorted(sizes.items(), key=lambda kv: int(kv[0])))
                    print(
                        f"{kind:<6} {clients:>7} {len(lat):>8} {rate:>8.1f} {1000 * statistics.median(lat):>8.1f} "
                        f"{1000 * percentile(lat, 0.99):>8.1f}  {f'mean {mean:.1f} ({shown})' if shown else '-'}"
                    )
                    if kind == "image":
                        image_rates[clients] = max(rate, image_rates.get(clients, 0.0))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        after = embed_rates(root, work / "emb-after", args.weights, args.arch, len(files))
        print_embed("after", after)
        whole, job, steady = (statistics.mean(pair) for pair in zip(before, after))
        top = max(levels)
        if top not in image_rates:
            return
        rate = image_rates[top]
        print(
            f"by image at {top} clients: {rate:.1f} q/s = {rate / steady:.2f} x embed's images/s after start-up "
            f"(mean of before and after), {rate / job:.2f} x the job's, {rate / whole:.2f} x the whole command's"
        )


if __name__ == "__main__":
    main()
