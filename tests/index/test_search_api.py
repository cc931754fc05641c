"""``Searcher.search`` / ``search_index``: the Python API of ``alexfeat search`` over a real index of real
embeddings (seeded random weights, small photos)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extractor.errors import AlexfeatError
from extractor.store import path_id
from index.build import build_index_dir
from index.search import Searcher, search_index
from tests.headdata import embed_tree, make_class_tree
from tests.imagefiles import make_corrupt_png


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, index) of six photos in three class folders."""
    base = tmp_path_factory.mktemp("search_api")
    make_class_tree(base / "photos", per_class=2)
    build_index_dir(embed_tree(base / "photos", base / "emb"), base / "idx", progress=False, augment=0)
    return base / "photos", base / "idx"


def test_a_searcher_builds_its_model_once_and_keeps_it(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    photos, idx = indexed
    searcher = Searcher(idx)
    first = searcher.search(images=[photos / "checks" / "img_01000.jpg"], k=2, expand=0)
    model = searcher.extractor
    bad = make_corrupt_png(tmp_path / "bad.png")
    second = searcher.search(images=[bad, photos / "discs" / "img_02001.jpg"], k=1, expand=0)
    assert searcher.extractor is model  # the second query reused the first one's model
    assert first.results[0].hits[0].path == "checks/img_01000.jpg" and first.errors == []
    assert [r.hits[0].path for r in second.results] == ["discs/img_02001.jpg"]
    assert [(path, kind) for path, kind, _ in second.errors] == [(str(bad), "corrupt")]


def test_search_index_takes_any_mix_of_query_kinds(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    photos, idx = indexed
    by_folder = search_index(idx, queries_dir=photos / "Stripes", k=1, expand=0)
    assert [r.hits[0].path for r in by_folder.results] == ["Stripes/img_00000.jpg", "Stripes/img_00001.jpg"]
    by_path = search_index(idx, paths=["discs/img_02000.jpg"], k=6, expand=0).results[0]
    assert by_path.query["path"] == "discs/img_02000.jpg" and len(by_path.hits) == 6
    mixed = search_index(
        idx, paths=["discs/img_02000.jpg"], ids=[path_id("Stripes/img_00001.jpg")], k=2, exclude_self=True
    )  # answered ids first, then paths; each without its own item
    assert [r.query["path"] for r in mixed.results] == ["Stripes/img_00001.jpg", "discs/img_02000.jpg"]
    assert all(r.query["path"] not in [h.path for h in r.hits] and len(r.hits) == 2 for r in mixed.results)
    with pytest.raises(AlexfeatError, match=r"give at least one query"):
        search_index(idx)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlexfeatError, match="holds no image files"):
        search_index(idx, queries_dir=tmp_path / "empty")
