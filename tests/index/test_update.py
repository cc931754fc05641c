"""index.update: add new and changed rows, remove by id or path; removed ids never come back, for every index type."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from extractor.errors import AlexfeatError
from extractor.store import load_dataset, path_ids
from index.build import build_index_dir
from index.search import Searcher
from index.update import add_to_index, remove_from_index
from tests.index_data import DIM, clustered, paths_for, replace_rows, stored_ids, write_dataset
from tests.storedata import make_meta

N = 700
# Removable in place (flat, inverted file) and not (HNSW, refined PQ: masked at search time).
FACTORIES = {"Flat": "native", "IVF8,Flat": "native", "HNSW32": "mask", "PQ8x4fs,RFlat": "mask"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "emb"
    write_dataset(out, paths_for(N), clustered(N, clusters=6), rows_per_part=150)
    return out


@pytest.fixture(params=list(FACTORIES))
def built(request: pytest.FixtureRequest, base: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """(embeddings copy, index dir, factory) — a fresh copy per test so datasets can be edited."""
    emb = tmp_path / "emb"
    shutil.copytree(base, emb)
    build_index_dir(emb, tmp_path / "idx", factory=request.param, augment=0)
    return emb, tmp_path / "idx", request.param


def _assert_consistent(index_dir: Path, emb: Path, absent: set[int] = frozenset()) -> None:
    """Every item answers itself first under its dataset id, path and label; ``absent`` ids never appear."""
    data = load_dataset(emb)
    searcher = Searcher(index_dir)
    keep = ~np.isin(data.ids, list(absent))
    assert searcher.count == int(keep.sum())
    stored = stored_ids(searcher.dir.index)  # index.faiss is keyed by the Parquet ids, masked ones aside
    assert sorted(set(stored.tolist()) - set(searcher.dir.masked.tolist())) == sorted(data.ids[keep].tolist())
    assert len(stored) == len(set(stored.tolist()))
    hits = searcher.search_vectors(data.vectors, k=10, expand=0)
    path_of = {i: (p, lab) for i, p, lab in zip(data.ids.tolist(), data.paths, data.labels)}
    for row, row_hits in enumerate(hits):
        returned = {h.id for h in row_hits}
        assert not returned & absent
        for h in row_hits:
            assert (h.path, h.label) == path_of[h.id]
        if keep[row]:
            assert row_hits[0].id == data.ids[row]


def test_remove_by_id_and_path_never_returns_them(built: tuple[Path, Path, str]) -> None:
    emb, index_dir, factory = built
    data = load_dataset(emb)
    gone = {int(data.ids[0]), int(data.ids[1]), int(data.ids[2])}
    summary = remove_from_index(index_dir, ids=[int(data.ids[0]), int(data.ids[1])], paths=[data.paths[2]])
    assert summary.removed == 3 and summary.count == N - 3
    info = json.loads((index_dir / "index.json").read_text())
    assert info["removal"] == FACTORIES[factory]
    assert info["masked_count"] == (3 if FACTORIES[factory] == "mask" else 0)
    _assert_consistent(index_dir, emb, gone)
    # even the removed vectors themselves, as queries asking for everything, do not find their old entries
    for hits in Searcher(index_dir).search_vectors(data.vectors[:3], k=N, expand=0):
        assert hits and not {h.id for h in hits} & gone
    with pytest.raises(AlexfeatError, match="not in the index"):
        Searcher(index_dir).search_ids([int(data.ids[0])])


def test_add_inserts_new_rows_and_replaces_changed_ones(built: tuple[Path, Path, str]) -> None:
    emb, index_dir, factory = built
    new_paths = paths_for(60, start=N)
    write_dataset(emb, new_paths, clustered(60, clusters=6, seed=9))
    changed = paths_for(5)
    new_vectors = clustered(5, seed=77)
    replace_rows(emb, changed, new_vectors)
    summary = add_to_index(index_dir, emb)
    assert (summary.added, summary.replaced, summary.unchanged) == (60, 5, N - 5)
    assert summary.count == N + 60
    assert summary.rebuilt == (FACTORIES[factory] == "mask")
    _assert_consistent(index_dir, emb)
    hits = Searcher(index_dir).search_vectors(new_vectors, k=1, expand=0)  # the new vectors, not the old, answer
    assert [h[0].id for h in hits] == path_ids(changed).tolist()
    assert [h[0].score for h in hits] == pytest.approx([1.0] * 5, abs=1e-3)
    assert add_to_index(index_dir, emb).added == 0  # a second run has nothing to do


def test_removed_rows_still_in_the_dataset_come_back_with_add(built: tuple[Path, Path, str]) -> None:
    emb, index_dir, _ = built
    data = load_dataset(emb, embeddings=False)
    remove_from_index(index_dir, ids=[int(data.ids[7])])
    summary = add_to_index(index_dir, emb)
    assert summary.added == 1
    _assert_consistent(index_dir, emb)


def test_add_measures_recall_again(built: tuple[Path, Path, str]) -> None:
    emb, index_dir, _ = built
    write_dataset(emb, paths_for(30, start=N), clustered(30, clusters=6, seed=3))
    summary = add_to_index(index_dir, emb)
    info = json.loads((index_dir / "index.json").read_text())
    assert summary.recall_at_10 == pytest.approx(info["recall_at_10"], abs=1e-4)
    assert info["recall_at_10"] >= 0.95


def test_add_from_another_models_dataset_is_refused(base: Path, tmp_path: Path) -> None:
    build_index_dir(base, tmp_path / "idx", augment=0)
    before = (tmp_path / "idx" / "index.json").read_text()
    other = tmp_path / "other"
    write_dataset(other, paths_for(20), clustered(20), meta=make_meta(DIM, layer="fc7"))
    with pytest.raises(AlexfeatError, match="other model settings than the index.*layer: pool5 != fc7"):
        add_to_index(tmp_path / "idx", other)
    assert (tmp_path / "idx" / "index.json").read_text() == before


def test_add_from_a_dataset_of_another_images_folder_is_refused(base: Path, tmp_path: Path) -> None:
    """Its paths would be read under the index's folder, and a path both folders hold would replace the other."""
    build_index_dir(base, tmp_path / "idx", augment=0)
    before = (tmp_path / "idx" / "index.json").read_text()
    other = tmp_path / "other"
    write_dataset(other, paths_for(20), clustered(20), meta=make_meta(DIM, root="/elsewhere/photos"))
    with pytest.raises(AlexfeatError, match="embedded from /elsewhere/photos, the index .* from images; .*index build"):
        add_to_index(tmp_path / "idx", other)
    assert (tmp_path / "idx" / "index.json").read_text() == before


def test_remove_with_an_unknown_id_or_path_changes_nothing(base: Path, tmp_path: Path) -> None:
    build_index_dir(base, tmp_path / "idx", augment=0)
    known = int(load_dataset(base, embeddings=False).ids[0])
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").rglob("*") if p.is_file()}
    with pytest.raises(AlexfeatError, match="id 42 not in the index"):
        remove_from_index(tmp_path / "idx", ids=[known, 42])
    with pytest.raises(AlexfeatError, match="path 'cat/missing.jpg' not in the index"):
        remove_from_index(tmp_path / "idx", paths=["cat/missing.jpg"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").rglob("*") if p.is_file()} == before


def test_masked_index_cannot_replace_rows_from_a_dataset_lacking_some_of_its_items(base: Path, tmp_path: Path) -> None:
    build_index_dir(base, tmp_path / "idx", factory="HNSW32", augment=0)
    partial = tmp_path / "partial"
    paths = paths_for(10)
    write_dataset(
        partial, paths, clustered(10, seed=5), digests=[bytes(32)] * 10
    )  # the same paths with other contents: replacements
    with pytest.raises(AlexfeatError, match="cannot replace vectors.*lacks some of its rows"):
        add_to_index(tmp_path / "idx", partial)


def test_add_to_a_native_index_from_a_partial_dataset_keeps_the_other_items(base: Path, tmp_path: Path) -> None:
    build_index_dir(base, tmp_path / "idx", factory="IVF8,Flat", augment=0)
    extra = tmp_path / "extra"
    write_dataset(extra, paths_for(15, start=10_000), clustered(15, seed=8))
    summary = add_to_index(tmp_path / "idx", extra)
    assert summary.added == 15 and summary.count == N + 15 and summary.recall_at_10 is None
    assert Searcher(tmp_path / "idx").search_paths([paths_for(1)[0]], k=1, expand=0)[0].hits[0].path == paths_for(1)[0]
