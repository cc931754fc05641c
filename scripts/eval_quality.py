"""Retrieval and linear-probe quality of alexfeat embeddings on a labelled (class-per-folder) image set.

    python scripts/eval_quality.py IMAGES_DIR EMB_DIR [--weights W] [--variant pooling=max --variant resize=squash227]

Embeds IMAGES_DIR into EMB_DIR (a rerun only checks that nothing changed), then reports, with the protocol of
docs/design.md's reference figures:
- cosine kNN leave-one-out precision@10 and mAP by label (every image queries all the others);
- linear probe: scikit-learn LogisticRegression(C=10, max_iter=3000) on the L2-normalised vectors, 30 training
  images per class drawn with numpy.random.default_rng(0), the rest tested.
Each ``--variant key=value[,key=value]`` (keys: pooling, layer, resize) embeds into EMB_DIR-<variant> and adds a
row, so settings are compared in one run. ``--post sqrt`` adds a power-normalised (signed square root) row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = {"P@10": 0.756, "mAP": 0.556, "probe": 0.916}  # docs/design.md, pool5 global average, caffe weights


def knn_scores(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Leave-one-out cosine kNN precision@k and mean average precision over all other items."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :-1]  # drop self (ranked last)
    relevant = labels[order] == labels[:, None]
    precision_at_k = relevant[:, :k].mean()
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)
    return float(precision_at_k), float(ap.mean())


def probe_split(labels: np.ndarray, per_class: int = 30, seed: int = 0) -> np.ndarray:
    """Boolean training mask: ``per_class`` items of each class (sorted class order) drawn with default_rng(seed)."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), bool)
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels == label)
        train[rng.choice(members, size=min(per_class, len(members) - 1), replace=False)] = True
    return train


def probe_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    train = probe_split(labels)
    clf = LogisticRegression(C=10, max_iter=3000).fit(vectors[train], labels[train])
    return float((clf.predict(vectors[~train]) == labels[~train]).mean())


def evaluate(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p10, mean_ap = knn_scores(vectors, labels)
    return {"P@10": p10, "mAP": mean_ap, "probe": probe_accuracy(vectors, labels)}


def embed(images: Path, out: Path, weights: str | None, options: dict[str, str]) -> float:
    """Run ``alexfeat embed`` (resumes: a no-op when out is complete); returns wall seconds."""
    cmd = [sys.executable, "-m", "extractor.cli", "embed", str(images), "-o", str(out), "--no-progress"]
    if weights:
        cmd += ["--weights", weights]
    for key, value in options.items():
        cmd += [f"--{key}", value]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def signed_sqrt(vectors: np.ndarray) -> np.ndarray:
    out = np.sign(vectors) * np.sqrt(np.abs(vectors))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("emb_dir", type=Path)
    parser.add_argument("--weights", default=None, help="default: $ALEXFEAT_WEIGHTS or imagenet")
    parser.add_argument("--variant", action="append", default=[], help="e.g. pooling=max or resize=squash227")
    parser.add_argument("--post", choices=["sqrt"], action="append", default=[])
    args = parser.parse_args()

    from extractor.store import load_dataset

    rows = []
    settings = [("default", {})] + [(v, dict(kv.split("=", 1) for kv in v.split(","))) for v in args.variant]
    for name, options in settings:
        out = args.emb_dir if name == "default" else Path(f"{args.emb_dir}-{name.replace('=', '_').replace(',', '+')}")
        seconds = embed(args.images_dir, out, args.weights, options)
        data = load_dataset(out, columns=("path", "label"))
        order = np.argsort(np.array(data.paths))
        vectors, labels = data.vectors[order], np.array(data.labels, dtype=object)[order]
        meta = data.meta
        desc = f"{name}: {meta.layer}/{meta.pooling} {meta.resize}"
        rows.append((desc, meta.dim, evaluate(vectors, labels), seconds))
        for post in args.post:
            rows.append((f"{desc} +{post}", meta.dim, evaluate(signed_sqrt(vectors), labels), 0.0))

    print(
        f"{len(labels)} images, {len(set(labels))} classes; reference (docs/design.md, caffe pool5 avg): "
        + ", ".join(f"{k} {v:.3f}" for k, v in REFERENCE.items())
    )
    print(f"{'embedding':<58} {'D':>5} {'P@10':>6} {'mAP':>6} {'probe':>6} {'embed s':>8}")
    for desc, dim, scores, seconds in rows:
        print(
            f"{desc:<58} {dim:>5} {scores['P@10']:>6.3f} {scores['mAP']:>6.3f} {scores['probe']:>6.3f} {seconds:>8.1f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
