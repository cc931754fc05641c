"""index.dedup: planted near-duplicates are grouped (exactly and through the inverted file), written as JSON/CSV."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from extractor.cli import main
from extractor.errors import AlexfeatError
from index.dedup import DEFAULT_THRESHOLD, candidate_pairs, dedup_dataset, duplicate_groups, write_report
from index.verify import PairVerifier
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


@pytest.mark.parametrize("exact_max", [10_000, 100])  # exact search; inverted file
def test_candidate_pairs_are_each_planted_pair_once(exact_max: int) -> None:
    x, groups = planted()
    a, b, cosine = candidate_pairs(x, min_cosine=0.95, exact_max=exact_max)
    planted_pairs = {(i, j) for g in groups for i in g for j in g if i < j}
    assert set(zip(a.tolist(), b.tolist())) == planted_pairs and len(a) == len(planted_pairs)
    np.testing.assert_allclose(cosine, np.einsum("ij,ij->i", x[a], x[b]), atol=1e-5)
    few = candidate_pairs(x, min_cosine=0.95, neighbours=1, exact_max=exact_max)  # the nearest one only
    assert len(few[0]) < len(a) and set(zip(few[0].tolist(), few[1].tolist())) <= planted_pairs


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
    report = dedup_dataset(tmp_path / "emb", 0.95, verify=False)
    assert report.count == len(x) and report.duplicates == sum(len(g) - 1 for g in groups)
    expected = [sorted(({"id": int(ids[i]), "path": paths[i]} for i in g), key=lambda m: m["path"]) for g in groups]
    expected.sort(key=lambda g: (-len(g), g[0]["path"]))  # largest first, then by first path
    row = {p: i for i, p in enumerate(paths)}
    for group in expected:  # each member's cosine to the group's first
        for m in group:
            m["score"] = round(float(x[row[m["path"]]] @ x[row[group[0]["path"]]]), 4) if m is not group[0] else 1.0
    write_report(report, tmp_path / "dups.json")
    assert json.loads((tmp_path / "dups.json").read_text()) == expected
    write_report(report, tmp_path / "dups.csv")
    with open(tmp_path / "dups.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["group"]), int(r["id"]), r["path"], float(r["score"])) for r in rows] == [
        (number, m["id"], m["path"], m["score"]) for number, group in enumerate(expected, 1) for m in group
    ]
    assert "near-duplicate groups: 4 (11 images, 7 redundant) among 300 images" in report.summary()


def test_unknown_output_format_is_a_clear_error(tmp_path: Path) -> None:
    x = clustered(20, noise=2.0)
    write_dataset(tmp_path / "emb", paths_for(20), x)
    with pytest.raises(AlexfeatError, match=r"name it \.json or \.csv"):
        write_report(dedup_dataset(tmp_path / "emb", verify=False), tmp_path / "dups.txt")


def test_no_duplicates_gives_no_groups() -> None:
    assert duplicate_groups(clustered(100, noise=2.0), 0.99) == []
    assert duplicate_groups(clustered(1), 0.5) == []


COPIED = "Leopards/image_0001.jpg"
COPIES = ["Leopards/copy_bright.jpg", "Leopards/copy_crop.jpg", "Leopards/copy_half_q70.jpg"]
# Studio shots of motorbikes, one angle (different models): the embeddings link them, the pixels do not. (Shots of
# one model in other colours, e.g. 0036/0037 or 0049/0051, score 0.966-0.967 and are grouped: see README.)
LOOKALIKES = [f"Motorbikes/image_{n:04d}.jpg" for n in (36, 48, 49)]
LLAMA = ["llama/image_0001.jpg", "llama/image_0010.jpg"]  # DATASET.md: mean abs pixel difference 0.06
OTHERS = [f"{c}/image_0001.jpg" for c in ("airplanes", "bonsai", "crab", "watch")]
ODD = ["bonsai/<b>odd&.jpg", "bonsai/image_0001.jpg"]  # a re-saved copy whose name must never become HTML


@pytest.fixture(scope="module")
def photos(dev_images: Path, caffe_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos embedded with the real network: copies of one photo, lookalikes, a listed duplicate pair."""
    base = tmp_path_factory.mktemp("dedup")
    images = base / "images"
    for rel in [COPIED, *LOOKALIKES, *LLAMA, *OTHERS]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes((dev_images / rel).read_bytes())
    Image.open(dev_images / ODD[1]).save(images / ODD[0], quality=60)
    photo = Image.open(dev_images / COPIED).convert("RGB")
    width, height = photo.size
    ImageEnhance.Brightness(photo).enhance(1.3).save(images / COPIES[0], quality=90)
    photo.crop((width // 20, 0, width // 20 + width * 9 // 10, height * 9 // 10)).save(images / COPIES[1], quality=90)
    photo.resize((width // 2, height // 2), Image.BILINEAR).save(images / COPIES[2], quality=70)
    result = CliRunner().invoke(
        main,
        ["embed", str(images), "-o", str(base / "emb"), "--weights", str(caffe_weights), "--no-progress"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return base


def test_copies_are_grouped_and_lookalikes_are_not(photos: Path) -> None:
    report = dedup_dataset(photos / "emb")
    assert [[m.path for m in group] for group in report.groups] == [[*COPIES, COPIED], ODD, LLAMA]
    assert all(DEFAULT_THRESHOLD <= m.score <= 1.0 for group in report.groups for m in group)
    assert report.verified and report.candidates > 0 and not report.unreadable
    unverified = dedup_dataset(photos / "emb", verify=False)  # the embeddings alone link lookalikes
    assert any(set(LOOKALIKES) <= {m.path for m in group} for group in unverified.groups)


def test_verifier_scores_copies_above_lookalikes(photos: Path) -> None:
    paths = [COPIED, *COPIES, *LOOKALIKES]
    verifier = PairVerifier(photos / "images", paths)
    copies = verifier.scores(np.zeros(3, int), np.arange(1, 4))
    a, b = np.triu_indices(len(LOOKALIKES), 1)
    lookalikes = verifier.scores(a + 4, b + 4)
    assert copies.min() >= DEFAULT_THRESHOLD > lookalikes.max(), (copies, lookalikes)


def test_images_are_found_elsewhere_and_unreadable_ones_are_reported(photos: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(photos / "images", moved)
    (moved / COPIES[0]).write_bytes(b"")  # emptied since it was embedded
    with pytest.raises(AlexfeatError, match="pass --images-root"):
        dedup_dataset(photos / "emb", images_root=tmp_path / "nowhere")
    report = dedup_dataset(photos / "emb", images_root=moved)
    assert [[m.path for m in group] for group in report.groups] == [[*COPIES[1:], COPIED], ODD, LLAMA]
    assert list(report.unreadable) == [COPIES[0]] and "1 images unreadable" in report.summary()


def test_dedup_cli_writes_scores_and_a_page_of_the_groups(photos: Path, tmp_path: Path) -> None:
    out, page = tmp_path / "dups.csv", tmp_path / "dups.html"
    result = CliRunner().invoke(main, ["dedup", str(photos / "emb"), "-o", str(out), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert f"near-duplicate groups: 3 (8 images, 5 redundant) among {4 + 3 + 2 + 4 + 1} images" in result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["group"], r["path"]) for r in rows] == [
        (str(number), path) for number, group in enumerate([[*COPIES, COPIED], ODD, LLAMA], 1) for path in group
    ]
    assert rows[0]["score"] == "1.0" and all(DEFAULT_THRESHOLD <= float(r["score"]) <= 1.0 for r in rows)
    text = page.read_text()
    assert text.count("<section>") == 3 and text.count("data:image/jpeg;base64,") == 8
    assert "<b>odd" not in text and "bonsai/&lt;b&gt;odd&amp;.jpg" in text
