"""Retrieval and linear-probe quality of alexfeat embeddings on a labelled (class-per-folder) image set.

    python scripts/eval_quality.py IMAGES_DIR EMB_DIR [--weights W] [--variant pooling=max --variant resize=squash227]

Embeds IMAGES_DIR into EMB_DIR (a rerun only checks that nothing changed), then reports, with the protocol of
docs/design.md's reference figures:
- cosine kNN leave-one-out precision@10 and mAP by label (every image queries all the others);
- linear probe: scikit-learn LogisticRegression(C=10, max_iter=3000) on the L2-normalised vectors, 30 training
  images per class drawn with numpy.random.default_rng(0), the rest tested.
Each ``--variant key=value[,key=value]`` (keys: pooling, layer, resize, tta) embeds into EMB_DIR-<variant> and adds
a row, so settings are compared in one run. ``--post sqrt`` adds a power-normalised (signed square root) row.

Then, for each embedding and each ``--search augment=A,expand=E`` (default: a grid around the defaults), what a user
gets through the index and the search of the CLI (index.build_index_dir + index.Searcher, exact index):
- by id: every photo searched by its id (``Searcher.search_ids``, the full ranking), the photo itself excluded:
  label P@10 and mAP;
- new images: ``--holdout`` photos per class (sorted class order, drawn with numpy.random.default_rng(0)) are dropped
  from a copy of the dataset (EMB_DIR-holdout), the index built over the rest, and the held-out photos embedded
  by the searcher's model and searched as images: label P@10.
Indexes are written to EMB_DIR-index-a<A> and EMB_DIR-holdout-index-a<A>; rerunning rebuilds them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = {"P@10": 0.756, "mAP": 0.556, "probe": 0.916}  # docs/design.md, pool5 global average, caffe weights


def ranking_scores(relevant: np.ndarray, k: int = 10) -> tuple[float, float]:
    """precision@k and mean average precision of rankings (rows of booleans: is the item at that rank relevant)."""
    precision_at_k = relevant[:, :k].mean()
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    ap = (relevant * hits / ranks).sum(axis=1) / np.maximum(relevant.sum(axis=1), 1)
    return float(precision_at_k), float(ap.mean())


def knn_scores(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Leave-one-out cosine kNN precision@k and mean average precision over all other items."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :-1]  # drop self (ranked last)
    return ranking_scores(labels[order] == labels[:, None], k)


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


DEFAULT_SEARCHES = (
    "augment=0,expand=0",
    "augment=0,expand=1",
    "augment=0,expand=2",
    "augment=0,expand=3",
    "augment=0,expand=5",
    "augment=5,expand=0",
    "augment=10,expand=0",
    "augment=15,expand=0",
    "augment=10,expand=1",
    "augment=10,expand=2",
    "augment=10,expand=3",
)


def holdout_rows(labels: list[str], per_class: int, seed: int = 0) -> np.ndarray:
    """Rows held out of the index: ``per_class`` of each class (sorted class order) drawn with default_rng(seed)."""
    rng = np.random.default_rng(seed)
    labels_array = np.array(labels, dtype=object)
    picked = [rng.choice(np.flatnonzero(labels_array == c), per_class, replace=False) for c in sorted(set(labels))]
    return np.sort(np.concatenate(picked))


def holdout_dataset(emb_dir: Path, per_class: int) -> tuple[Path, list[str], list[str]]:
    """A copy of ``emb_dir`` without the held-out rows (written with the store's writer); returns it and the
    held-out paths and labels (sorted by path)."""
    from extractor.store import load_dataset, read_meta
    from extractor.store.writer import open_for_writing

    data = load_dataset(emb_dir, columns=("id", "path", "label"))
    order = np.argsort(np.array(data.get_paths(), dtype=object), kind="stable")
    paths = [data.get_paths()[i] for i in order]
    labels = [data.get_labels()[i] for i in order]
    rows = holdout_rows(labels, per_class)
    out = Path(f"{emb_dir}-holdout")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(emb_dir, out, ignore=shutil.ignore_patterns(".*"))
    with open_for_writing(out, read_meta(out)) as writer:
        writer.drop_ids(data.ids[order[rows]])
    return out, [paths[r] for r in rows.tolist()], [labels[r] for r in rows.tolist()]


def by_id_scores(index_dir: Path, expand: int) -> tuple[float, float]:
    """Every indexed item searched by its id through the Searcher (full ranking), the item itself excluded."""
    from index import Searcher

    searcher = Searcher(index_dir)
    lookup = searcher.dir.lookup
    rows = []
    for start in range(0, len(lookup), 256):
        ids = lookup.ids[start : start + 256]
        for query_id, result in zip(ids.tolist(), searcher.search_ids(ids, k=len(lookup), expand=expand)):
            own = lookup.labels[lookup.positions([query_id])[0]]
            rows.append([hit.label == own for hit in result.hits if hit.id != query_id])
    return ranking_scores(np.array(rows))


def new_image_precision(index_dir: Path, files: list[str], labels: list[str], expand: int, cache: dict) -> float:
    """label P@10 of held-out image files searched as images through the Searcher (embedded once per model)."""
    from index import Searcher

    searcher = Searcher(index_dir)
    key = json.dumps(searcher.dir.info["embedding_metadata"], sort_keys=True)
    if key not in cache:  # what Searcher.search_images does: embed with the recorded model, then search
        embedded = searcher.extractor.embed_images(files)
        if embedded.failures:
            raise SystemExit(f"held-out images failed: {embedded.failures[:3]}")
        cache[key] = embedded.values
    found = searcher.search_vectors(cache[key], k=10, expand=expand)
    return float(np.mean([[hit.label == label for hit in hits] for hits, label in zip(found, labels)]))


def search_rows(images: Path, emb_dir: Path, searches: list[dict[str, int]], per_class: int) -> list[tuple]:
    """(augment, expand, by-id P@10, by-id mAP, new-image P@10) for each search configuration of ``emb_dir``."""
    from index import build_index_dir

    held_dir, held_paths, held_labels = holdout_dataset(emb_dir, per_class)
    files = [str(images / p) for p in held_paths]
    cache: dict[str, np.ndarray] = {}
    rows = []
    for augment in sorted({s["augment"] for s in searches}):
        full, held = Path(f"{emb_dir}-index-a{augment}"), Path(f"{held_dir}-index-a{augment}")
        for source, out in ((emb_dir, full), (held_dir, held)):
            if out.exists():
                shutil.rmtree(out)
            build_index_dir(source, out, factory="Flat", augment=augment, progress=False)
        for expand in [s["expand"] for s in searches if s["augment"] == augment]:
            p10, mean_ap = by_id_scores(full, expand)
            rows.append((augment, expand, p10, mean_ap, new_image_precision(held, files, held_labels, expand, cache)))
    return rows


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
    parser.add_argument(
        "--search",
        action="append",
        default=[],
        help="augment=A,expand=E (repeatable; default: a grid around the defaults)",
    )
    parser.add_argument("--holdout", type=int, default=5, help="photos per class held out as new-image queries")
    parser.add_argument("--no-probe", action="store_true", help="skip the embedding table (kNN in numpy, probe)")
    args = parser.parse_args()
    searches = [
        {k: int(v) for k, v in (kv.split("=") for kv in spec.split(","))} for spec in args.search or DEFAULT_SEARCHES
    ]

    from extractor.store import load_dataset

    rows, searched = [], []
    settings = [("default", {})] + [(v, dict(kv.split("=", 1) for kv in v.split(","))) for v in args.variant]
    for name, options in settings:
        out = args.emb_dir if name == "default" else Path(f"{args.emb_dir}-{name.replace('=', '_').replace(',', '+')}")
        seconds = embed(args.images_dir, out, args.weights, options)
        data = load_dataset(out, columns=("path", "label"))
        order = np.argsort(np.array(data.paths))
        vectors, labels = data.vectors[order], np.array(data.labels, dtype=object)[order]
        meta = data.meta
        desc = f"{name}: {meta.layer}/{meta.pooling} {meta.resize}"
        if not args.no_probe:
            rows.append((desc, meta.dim, evaluate(vectors, labels), seconds))
            for post in args.post:
                rows.append((f"{desc} +{post}", meta.dim, evaluate(signed_sqrt(vectors), labels), 0.0))
        searched.append((name, search_rows(args.images_dir, out, searches, args.holdout)))

    print(
        f"{len(labels)} images, {len(set(labels))} classes; reference (docs/design.md, caffe pool5 avg): "
        + ", ".join(f"{k} {v:.3f}" for k, v in REFERENCE.items())
    )
    if rows:
        print(f"{'embedding':<58} {'D':>5} {'P@10':>6} {'mAP':>6} {'probe':>6} {'embed s':>8}")
    for desc, dim, scores, seconds in rows:
        print(
            f"{desc:<58} {dim:>5} {scores['P@10']:>6.3f} {scores['mAP']:>6.3f} {scores['probe']:>6.3f} {seconds:>8.1f}"
        )
    print(
        f"\nsearch through the index (by id: all {len(labels)} photos, self excluded; new images: {args.holdout}/class)"
    )
    print(f"{'embedding':<24} {'augment':>7} {'expand':>6} {'id P@10':>8} {'id mAP':>7} {'new P@10':>9}")
    for name, found in searched:
        for augment, expand, p10, mean_ap, new_p10 in found:
            print(f"{name:<24} {augment:>7} {expand:>6} {p10:>8.3f} {mean_ap:>7.3f} {new_p10:>9.3f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
