"""index.dedup: planted near-duplicates are grouped (exactly and through the inverted file), written as JSON/CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extractor.cli import main
from extractor.errors import AlexfeatError
from index.dedup import dedup_dataset, duplicate_groups, write_report
from tests.index_data import DIM, clustered, paths_for, write_dataset


def planted(n: int = 300, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Well-spread unit vectors with planted groups of near-copies (cosine > 0.99 to their original)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    groups = [[10, 11, 12, 13], [50, 51, 52], [200, 201], [120, 250]]
    for group in groups:
        for member in group[1:]:
            x[member] = x[group[0]] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, groups


@pytest.mark.parametrize("exact_max", [10_000, 100])  # exact range search; inverted file
def test_planted_groups_are_found_largest_first(exact_max: int) -> None:
    x, groups = planted()
    found = duplicate_groups(x, 0.95, exact_max=exact_max)
    assert [sorted(g.tolist()) for g in found[:2]] == [groups[0], groups[1]]
    assert sorted(sorted(g.tolist()) for g in found) == sorted(groups)


def test_a_chain_of_near_duplicates_is_one_group() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    step = rng.standard_normal(DIM).astype(np.float32)
    x[1] = x[0] + 0.3 * step  # 0 ~ 1 and 1 ~ 2, but 0 and 2 are further apart
    x[2] = x[0] + 0.6 * step
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    threshold = float(min(x[0] @ x[1], x[1] @ x[2])) - 1e-3
    assert x[0] @ x[2] < threshold
    assert [sorted(g.tolist()) for g in duplicate_groups(x, threshold)] == [[0, 1, 2]]


def test_threshold_is_inclusive_and_validated() -> None:
    x = np.eye(4, DIM, dtype=np.float32)
    x[1] = x[0]
    assert [g.tolist() for g in duplicate_groups(x, 1.0)] == [[0, 1]]  # identical vectors: cosine exactly 1
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(AlexfeatError, match="threshold"):
            duplicate_groups(x, bad)


def test_dataset_report_lists_ids_and_paths_as_json_and_csv(tmp_path: Path) -> None:
    x, groups = planted()
    paths = paths_for(len(x))
    ids = write_dataset(tmp_path / "emb", paths, x)
    report = dedup_dataset(tmp_path / "emb", 0.95)
    assert report.count == len(x) and report.duplicates == sum(len(g) - 1 for g in groups)
    expected = [sorted(({"id": int(ids[i]), "path": paths[i]} for i in g), key=lambda m: m["path"]) for g in groups]
    expected.sort(key=lambda g: (-len(g), g[0]["path"]))  # largest first, then by first path
    write_report(report, tmp_path / "dups.json")
    assert json.loads((tmp_path / "dups.json").read_text()) == expected
    write_report(report, tmp_path / "dups.csv")
    with open(tmp_path / "dups.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["group"]), int(r["id"]), r["path"]) for r in rows] == [
        (number, m["id"], m["path"]) for number, group in enumerate(expected, 1) for m in group
    ]
    assert "near-duplicate groups: 4 (11 images, 7 redundant) among 300 images" in report.summary()


def test_unknown_output_format_is_a_clear_error(tmp_path: Path) -> None:
    x = clustered(20, noise=2.0)
    write_dataset(tmp_path / "emb", paths_for(20), x)
    with pytest.raises(AlexfeatError, match=r"name it \.json or \.csv"):
        write_report(dedup_dataset(tmp_path / "emb"), tmp_path / "dups.txt")


def test_no_duplicates_gives_no_groups() -> None:
    assert duplicate_groups(clustered(100, noise=2.0), 0.99) == []
    assert duplicate_groups(clustered(1), 0.5) == []


def test_real_photos_with_known_and_resaved_duplicates(dev_images: Path, caffe_weights: Path, tmp_path: Path) -> None:
    """Caltech photos that DATASET.md lists as near-duplicates, plus a copy re-saved at JPEG quality 60."""
    stop = [f"stop_sign/image_{n:04d}.jpg" for n in (1, 5, 34, 56)]  # same dHash, not pixel-identical
    llama = ["llama/image_0001.jpg", "llama/image_0010.jpg"]  # mean abs pixel difference 0.06
    others = [f"{c}/image_0001.jpg" for c in ("airplanes", "bonsai", "crab", "watch", "chair", "dolphin")]
    images = tmp_path / "images"
    for rel in stop + llama + others:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes((dev_images / rel).read_bytes())
    Image.open(dev_images / "bonsai/image_0001.jpg").save(images / "bonsai/resaved.jpg", quality=60)
    result = CliRunner().invoke(
        main,
        ["embed", str(images), "-o", str(tmp_path / "emb"), "--weights", str(caffe_weights), "--no-progress"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = dedup_dataset(tmp_path / "emb", 0.95)
    assert [[path for _, path in group] for group in report.groups] == [
        stop,
        ["bonsai/image_0001.jpg", "bonsai/resaved.jpg"],
        llama,
    ]
