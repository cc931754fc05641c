"""index.build / index.search on a real Parquet dataset: the index directory, its checks, queries by vector/id/path."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from extractor.errors import AlexfeatError
from extractor.network.spec import EmbeddingMeta
from extractor.store import DatasetWriter, load_dataset
from index.build import build_index_dir
from index.indexdir import REQUIRED_KEYS
from index.search import Searcher
from index.update import add_to_index
from tests.format1 import format1_record
from tests.index_data import clustered, paths_for, write_dataset
from tests.storedata import make_meta

N = 600


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "emb"
    write_dataset(out, paths_for(N), clustered(N), rows_per_part=250)
    return out


@pytest.fixture(scope="module")
def flat_index(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "flat"
    build_index_dir(dataset, out, augment=0)
    return out


def test_index_json_has_the_design_keys_first(flat_index: Path, dataset: Path) -> None:
    info = json.loads((flat_index / "index.json").read_text())
    assert list(info)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert info["factory"] == "IDMap2,Flat" and info["metric"] == "inner_product"
    assert info["dim"] == 32 and info["count"] == N
    assert info["recall_at_10"] == 1.0 and info["search_params"] == {}
    assert info["build_seconds"] > 0
    assert EmbeddingMeta.from_dict(info["embedding_metadata"]) == load_dataset(dataset, embeddings=False).meta


def test_an_index_written_by_format_1_opens_and_takes_new_rows(flat_index: Path, dataset: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(flat_index, old)
    meta = load_dataset(dataset, embeddings=False).meta
    info = json.loads((old / "index.json").read_text())
    (old / "index.json").write_text(json.dumps({**info, "embedding_metadata": format1_record(meta)}, indent=2))
    assert Searcher(old).dir.meta == replace(meta, package_version="0.1.0")
    more = tmp_path / "emb"
    shutil.copytree(dataset, more)
    write_dataset(more, paths_for(10, start=N), clustered(10, seed=9))
    assert add_to_index(old, more).added == 10  # the compatibility check compares the settings, not the versions


def test_index_faiss_opens_with_plain_faiss_and_is_keyed_by_the_parquet_ids(flat_index: Path, dataset: Path) -> None:
    data = load_dataset(dataset)
    index = faiss.read_index(str(flat_index / "index.faiss"))
    assert index.ntotal == N and index.d == 32
    _, found = index.search(data.vectors[:20], 1)
    assert (found[:, 0] == data.ids[:20]).all()


def test_lookup_rows_match_the_dataset(flat_index: Path, dataset: Path) -> None:
    data = load_dataset(dataset, columns=("id", "path", "label", "sha256"), embeddings=False)
    lookup = pq.read_table(flat_index / "ids.parquet").to_pylist()
    expected = sorted(zip(data.ids.tolist(), data.paths, data.labels, data.sha256))
    assert [(r["id"], r["path"], r["label"], r["sha256"]) for r in lookup] == expected


def test_search_by_vector_returns_parquet_ids_with_their_paths_and_labels(flat_index: Path, dataset: Path) -> None:
    data = load_dataset(dataset)
    hits = Searcher(flat_index).search_vectors(data.vectors[[3, 77, 420]], k=5, expand=0)
    path_of = dict(zip(data.ids.tolist(), data.paths))
    label_of = dict(zip(data.ids.tolist(), data.labels))
    for row, query_hits in zip([3, 77, 420], hits):
        assert [h.rank for h in query_hits] == [1, 2, 3, 4, 5]
        assert query_hits[0].id == data.ids[row] and query_hits[0].score == pytest.approx(1.0, abs=1e-5)
        exact = np.argsort(-(data.vectors @ data.vectors[row]))[:5]
        assert [h.id for h in query_hits] == data.ids[exact].tolist()
        for h in query_hits:
            assert h.path == path_of[h.id] and h.label == label_of[h.id]


def test_search_by_id_and_by_path_puts_the_item_first_with_score_one(flat_index: Path, dataset: Path) -> None:
    data = load_dataset(dataset)
    searcher = Searcher(flat_index)
    by_id = searcher.search_ids([int(data.ids[10])], k=3, expand=0)[0]
    by_path = searcher.search_paths([data.paths[10]], k=3, expand=0)[0]
    assert by_id.query == {"id": int(data.ids[10]), "path": data.paths[10]} == by_path.query
    for result in (by_id, by_path):
        assert result.hits[0].id == data.ids[10] and result.hits[0].path == data.paths[10]
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_an_item_queried_by_id_comes_before_its_exact_duplicate(tmp_path: Path) -> None:
    x = clustered(30)
    x[17] = x[3]  # the same picture under two names: identical embeddings, tied scores
    paths = paths_for(30)
    ids = write_dataset(tmp_path / "emb", paths, x)
    build_index_dir(tmp_path / "emb", tmp_path / "idx", augment=0)
    searcher = Searcher(tmp_path / "idx")
    for row, twin in ((3, 17), (17, 3)):
        hits = searcher.search_ids([int(ids[row])], k=3, expand=0)[0].hits
        assert [h.id for h in hits[:2]] == [ids[row], ids[twin]] and [h.rank for h in hits] == [1, 2, 3]
        assert hits[0].score == hits[1].score
    assert searcher.search_paths([paths[17]], k=1, expand=0)[0].hits[0].path == paths[17]


def test_k_larger_than_the_collection_returns_every_item_once(dataset: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    ids = write_dataset(small, paths_for(4), clustered(4))
    build_index_dir(small, tmp_path / "idx", augment=0)
    hits = Searcher(tmp_path / "idx").search_vectors(clustered(1, seed=5), k=10, expand=0)[0]
    assert sorted(h.id for h in hits) == sorted(ids.tolist())


def test_unknown_id_or_path_is_a_clear_error(flat_index: Path) -> None:
    searcher = Searcher(flat_index)
    with pytest.raises(AlexfeatError, match="id 12345 not in the index"):
        searcher.search_ids([12345])
    with pytest.raises(AlexfeatError, match="path 'cat/nope.jpg' not in the index"):
        searcher.search_paths(["cat/nope.jpg"])


def test_query_of_another_dimension_is_a_clear_error(flat_index: Path) -> None:
    with pytest.raises(AlexfeatError, match="64 dimensions but the index has 32"):
        Searcher(flat_index).search_vectors(clustered(2, dim=64))


def test_index_of_another_dimension_than_its_json_is_refused(flat_index: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(flat_index, broken, symlinks=True)  # the links stay links
    faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(64)), str(broken / "index.faiss"))
    info = json.loads((broken / "index.json").read_text())
    info["files"]["index.faiss"] = (broken / "index.faiss").stat().st_size  # a consistent-looking but foreign file
    (broken / "index.json").write_text(json.dumps(info))
    with pytest.raises(AlexfeatError, match="64-d vectors but index.json says 32"):
        Searcher(broken)


def test_truncated_index_file_is_a_clear_error(flat_index: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(flat_index, broken, symlinks=True)  # the links stay links
    data = (broken / "index.faiss").read_bytes()
    (broken / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(AlexfeatError, match="index.faiss is .* bytes but index.json recorded .*cut short"):
        Searcher(broken)
    info = json.loads((broken / "index.json").read_text())
    del info["files"]  # even without the recorded size, FAISS's own read error is reported clearly
    (broken / "index.json").write_text(json.dumps(info))
    with pytest.raises(AlexfeatError, match="index.faiss cannot be read by FAISS"):
        Searcher(broken)


@pytest.mark.parametrize(
    "victim, message", [("index.json", "index.json is missing"), ("ids.parquet", "ids.parquet is missing")]
)
def test_missing_files_are_clear_errors(flat_index: Path, tmp_path: Path, victim: str, message: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(flat_index, broken, symlinks=True)  # the links stay links
    generation = json.loads((broken / "index.json").read_text())["generation"]
    (broken / victim).unlink()
    if victim != "index.json":
        (broken / generation / victim).unlink()  # the file itself, not only its link
    with pytest.raises(AlexfeatError, match=message):
        Searcher(broken)


def test_missing_index_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AlexfeatError, match="does not exist; build it"):
        Searcher(tmp_path / "nowhere")


def test_an_embeddings_dataset_given_as_the_index_says_to_build_one(dataset: Path) -> None:
    with pytest.raises(AlexfeatError, match=r"is an embeddings dataset, not an index: build its index with `alexfeat"):
        Searcher(dataset)


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "emb", make_meta()):
        pass
    with pytest.raises(AlexfeatError, match="no embeddings"):
        build_index_dir(tmp_path / "emb", tmp_path / "idx", augment=0)


def test_build_refuses_to_write_into_a_foreign_directory(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(AlexfeatError, match="not empty and holds no alexfeat index"):
        build_index_dir(dataset, tmp_path / "out", augment=0)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_rebuilding_over_an_index_replaces_it(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index_dir(dataset, out, factory="HNSW32", augment=0)
    build_index_dir(dataset, out, factory="IVF8,Flat", augment=0)
    info = json.loads((out / "index.json").read_text())
    assert info["factory"] == "IVF8,Flat" and info["removal"] == "native"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "gen-000002",  # the first build's generation is gone
        "ids.parquet",
        "index.faiss",
        "index.json",
    ]
    assert sorted(p.name for p in (out / "gen-000002").iterdir()) == ["ids.parquet", "index.faiss"]
    assert (out / "index.faiss").resolve() == (out / "gen-000002" / "index.faiss").resolve()


def test_an_ivf_requested_on_too_few_vectors_is_a_clear_error(tmp_path: Path) -> None:
    write_dataset(tmp_path / "emb", paths_for(50), clustered(50))
    with pytest.raises(AlexfeatError, match="needs at least 256 vectors to train its IVF quantiser"):
        build_index_dir(tmp_path / "emb", tmp_path / "idx", factory="IVF256,Flat")
    assert not (tmp_path / "idx" / "index.json").exists()


def test_a_folder_named_like_a_generation_but_not_one_is_never_deleted(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "gen-000001").mkdir(parents=True)
    (out / "gen-000001" / "notes.txt").write_text("precious")
    with pytest.raises(AlexfeatError, match="not empty and holds no alexfeat index"):
        build_index_dir(dataset, out)
    assert (out / "gen-000001" / "notes.txt").read_text() == "precious"
