"""Benchmark classifier heads on an embeddings dataset: training time, validation accuracy, probe accuracy.

For each head (``linear``, ``mlp``), with the same code ``alexfeat train`` runs:

1. the default 20 % stratified validation split: training seconds (median over ``--repeats`` seeds), epochs,
   validation accuracy (mean over the seeds);
2. the docs/design.md probe protocol: 30 training images per class drawn with ``numpy.random.default_rng(0)`` (one
   generator, classes in sorted order, each class's rows in path order), every other image tested; the head is
   trained on the 30 per class once with its own 20 % early-stopping split inside them ("probe, split") and once
   on all of them for the default number of epochs (``--val-fraction 0``: "probe, all");

and, when scikit-learn is installed, the reference probe itself (``LogisticRegression(C=10, max_iter=3000)``) on
the same vectors and split, so the heads compare with the reference on these exact embeddings.

    python scripts/bench_heads.py EMB_DIR [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

PROBE_PER_CLASS = 30
REFERENCE = {"avg": 0.916, "max": 0.916}  # docs/design.md, caffe weights, 256-d pool5


def probe_split(paths: list[str], labels: list[str], per_class: int = PROBE_PER_CLASS) -> np.ndarray:
    """Boolean mask of the probe's training rows."""
    rng = np.random.default_rng(0)
    order = np.argsort(np.array(paths, dtype=object), kind="stable")
    labels_sorted = np.array(labels, dtype=object)[order]
    train = np.zeros(len(paths), dtype=bool)
    for label in sorted(set(labels)):
        members = order[labels_sorted == label]
        if len(members) <= per_class:
            raise SystemExit(f"class {label!r} has {len(members)} images; the probe needs more than {per_class}")
        train[rng.choice(members, per_class, replace=False)] = True
    return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("emb_dir")
    parser.add_argument("--repeats", type=int, default=3, help="seeds for the default-split figures")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    from extractor.network.tf_runtime import import_tensorflow

    import_tensorflow()
    from extractor.heads.train import HEAD_KINDS, TrainConfig, train_head
    from extractor.store import load_dataset

    data = load_dataset(args.emb_dir)
    keep = [i for i, label in enumerate(data.labels) if label is not None]
    vectors, paths = data.vectors[keep], [data.paths[i] for i in keep]
    labels = [data.labels[i] for i in keep]
    meta = data.meta
    results: dict[str, object] = {
        "embeddings": f"{meta.arch} {meta.layer}/{meta.pooling} {meta.dim}-d, {len(keep)} labelled vectors, "
        f"{len(set(labels))} classes",
        "threads": os.cpu_count(),
    }

    probe = probe_split(paths, labels)
    test_labels = np.array(labels, dtype=object)[~probe]
    probe_paths = [p for p, t in zip(paths, probe) if t]
    probe_labels = [lab for lab, t in zip(labels, probe) if t]

    def probe_accuracy(val_fraction: float, kind: str) -> float:
        head = train_head(vectors[probe], probe_paths, probe_labels, TrainConfig(kind, val_fraction), progress=False)
        predicted = np.array(head.classes, dtype=object)[head.model(vectors[~probe]).numpy().argmax(axis=1)]
        return float(np.mean(predicted == test_labels))

    for kind in HEAD_KINDS:
        runs = [
            train_head(vectors, paths, labels, TrainConfig(kind, seed=seed), progress=False).metrics
            for seed in range(args.repeats)
        ]
        results[kind] = {
            "train_seconds_median": statistics.median(m["train_seconds"] for m in runs),
            "train_seconds": [m["train_seconds"] for m in runs],
            "epochs": [m["epochs_run"] for m in runs],
            "val_accuracy_mean": float(np.mean([m["val_accuracy"] for m in runs])),
            "val_accuracy": [round(m["val_accuracy"], 4) for m in runs],
            "train_count": runs[0]["train_count"],
            "val_count": runs[0]["val_count"],
            "probe_accuracy_split": probe_accuracy(0.2, kind),
            "probe_accuracy_all": probe_accuracy(0.0, kind),
        }
    try:
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        clf = LogisticRegression(C=10, max_iter=3000).fit(vectors[probe], np.array(probe_labels, dtype=object))
        results["sklearn_probe_accuracy"] = float(np.mean(clf.predict(vectors[~probe]) == test_labels))
        results["sklearn_probe_seconds"] = time.perf_counter() - start
    except ImportError:
        results["sklearn_probe_accuracy"] = None
    results["reference_probe_accuracy"] = REFERENCE.get(str(meta.pooling)) if meta.dim == 256 else None

    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{results['embeddings']}; {results['threads']} CPU threads")
    print(
        f"{'head':<8}{'train s (median)':>18}{'epochs (median)':>17}{'val acc (20 %)':>16}{'probe, split':>14}"
        f"{'probe, all':>12}"
    )
    for kind in HEAD_KINDS:
        r = results[kind]
        print(
            f"{kind:<8}{r['train_seconds_median']:>18.2f}{statistics.median(r['epochs']):>17.0f}"
            f"{r['val_accuracy_mean']:>16.3f}"
            f"{r['probe_accuracy_split']:>14.3f}{r['probe_accuracy_all']:>12.3f}"
        )
    if results["sklearn_probe_accuracy"] is not None:
        print(f"scikit-learn LogisticRegression(C=10) probe on these vectors: {results['sklearn_probe_accuracy']:.3f}")
    if results["reference_probe_accuracy"] is not None:
        print(f"docs/design.md reference probe (256-d, {meta.pooling}): {results['reference_probe_accuracy']:.3f}")


if __name__ == "__main__":
    main()
