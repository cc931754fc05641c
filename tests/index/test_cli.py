"""``alexfeat index build/add/remove``, ``alexfeat search`` and ``alexfeat dedup`` through the real click group."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from extractor.cli import main
from extractor.store import load_dataset, path_id
from tests.imagefiles import make_photo, raw_name
from tests.index_data import DIM, clustered, paths_for, write_dataset
from tests.storedata import make_meta

N = 120


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(images root, embeddings, index): synthetic vectors for real small image files under the recorded root."""
    base = tmp_path_factory.mktemp("cli")
    root = base / "images"
    paths = paths_for(N)
    for i, rel in enumerate(paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (i * 2 % 256, 100, 200 - i)).save(root / rel)
    write_dataset(base / "emb", paths, clustered(N), meta=make_meta(DIM, root=root.resolve()))
    code, output = run("index", "build", base / "emb", "-o", base / "idx", "--no-progress", "--augment", "0")
    assert code == 0, output
    return root, base / "emb", base / "idx"


def test_build_prints_a_summary_and_accepts_a_memory_budget(
    collection: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, emb, _ = collection
    code, output = run("index", "build", emb, "-o", tmp_path / "idx", "--memory-budget", "1M", "--target-recall", "0.9")
    assert code == 0, output
    assert re.search(
        rf"IDMap2,Flat over {N} 32-d vectors augmented over 10 neighbours, recall@10 1\.000 with exact search", output
    )
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["memory_budget_bytes"] == 1 << 20 and info["target_recall"] == 0.9


@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory-budget", "lots"], "cannot read memory budget 'lots'"),
        (["--target-recall", "1.5"], "1.5 is not in the range"),
    ],
)
def test_build_rejects_bad_options_as_usage_errors(
    collection: tuple[Path, Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = run("index", "build", collection[1], "-o", tmp_path / "idx", *args)
    assert code == 2 and message in output


def test_search_json_lines_by_id_and_path(collection: tuple[Path, Path, Path]) -> None:
    _, emb, index_dir = collection
    data = load_dataset(emb)
    code, output = run(
        "search", index_dir, "--id", data.ids[4], "--id", data.ids[9], "-k", "3", "--json", "--expand", "0"
    )
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["query"] for line in lines] == [{"id": int(data.ids[i]), "path": data.paths[i]} for i in (4, 9)]
    for line, row in zip(lines, (4, 9)):
        assert [r["rank"] for r in line["results"]] == [1, 2, 3]
        first = line["results"][0]
        assert (first["id"], first["path"], first["label"]) == (int(data.ids[row]), data.paths[row], data.labels[row])
        assert first["score"] == pytest.approx(1.0, abs=1e-5)
        assert set(first) == {"rank", "id", "path", "label", "score"}
    code, output = run("search", index_dir, "--path", data.paths[4], "-k", "3", "--json", "--expand", "0")
    assert json.loads(output)["results"] == lines[0]["results"]


def test_search_prints_a_readable_table_by_default(collection: tuple[Path, Path, Path]) -> None:
    _, emb, index_dir = collection
    data = load_dataset(emb, embeddings=False)
    code, output = run("search", index_dir, "--path", data.paths[0], "-k", "2", "--expand", "0")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == f"query: id {data.ids[0]}  {data.paths[0]}"
    assert lines[1].split() == ["rank", "id", "score", "label", "path"]
    assert lines[2].split() == ["1", str(data.ids[0]), "1.000", data.labels[0], data.paths[0]]


def test_search_html_is_one_self_contained_page_with_thumbnails(
    collection: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, emb, index_dir = collection
    data = load_dataset(emb, embeddings=False)
    page = tmp_path / "results.html"
    code, output = run(
        "search", index_dir, "--id", data.ids[1], "--id", data.ids[2], "-k", "4", "--html", page, "--expand", "0"
    )
    assert code == 0, output
    text = page.read_text()
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 2 * (1 + 4)  # each query beside its 4 neighbours
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)
    thumb = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160
    assert data.paths[1] in text and "1.000" in text


def test_search_html_with_a_moved_images_folder(
    collection: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, emb, index_dir = collection
    data = load_dataset(emb, embeddings=False)
    page = tmp_path / "results.html"
    code, output = run(
        "search", index_dir, "--id", data.ids[1], "--html", page, "--images-root", tmp_path / "gone", "--expand", "0"
    )
    assert code == 1 and "Error: the images folder" in output and "--images-root" in output
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    (moved / data.paths[3]).unlink()  # one image deleted since: a placeholder, not a failure
    code, output = run(
        "search", index_dir, "--id", data.ids[3], "-k", "2", "--html", page, "--images-root", moved, "--expand", "0"
    )
    assert code == 0, output
    assert page.read_text().count('class="missing"') == 2  # the query and its own first hit
    assert f"1 of 2 images could not be read from {moved} (shown as placeholders; first: {data.paths[3]}" in output
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # that one note, no line per image


def test_search_html_of_embeddings_written_without_a_root_needs_images_root(
    collection: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A dataset written from Python with an extractor's settings alone (``root`` None) records no images folder."""
    root, emb, _ = collection
    data = load_dataset(emb)
    write_dataset(tmp_path / "emb", data.paths, data.vectors, meta=make_meta(DIM, root=None))
    assert run("index", "build", tmp_path / "emb", "-o", tmp_path / "idx", "--no-progress")[0] == 0
    page = tmp_path / "results.html"
    code, output = run("search", tmp_path / "idx", "--id", data.ids[1], "--html", page)
    assert code == 1 and "Error: the index records no images folder" in output and "--images-root" in output
    code, output = run("search", tmp_path / "idx", "--id", data.ids[1], "--html", page, "--images-root", root)
    assert code == 0, output
    assert 'class="missing"' not in page.read_text()


@pytest.mark.parametrize(
    "args, code, message",
    [
        ([], 2, "give at least one query"),
        (["--id", "12345"], 1, "Error: id 12345 not in the index"),
        (["--path", "cat/none.jpg"], 1, "Error: path 'cat/none.jpg' not in the index"),
        (["--id", "1", "-k", "0"], 2, "0 is not in the range"),
    ],
)
def test_search_errors(collection: tuple[Path, Path, Path], args: list[str], code: int, message: str) -> None:
    got, output = run("search", collection[2], *args)
    assert got == code and message in output


def test_search_on_a_truncated_index_is_an_error_not_a_traceback(
    collection: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "idx"
    shutil.copytree(collection[2], broken, symlinks=True)
    data = (broken / "index.faiss").read_bytes()
    (broken / "index.faiss").write_bytes(data[:100])
    code, output = run("search", broken, "--id", "1")
    assert code == 1 and output.startswith("Error: ") and "cut short" in output


def test_add_and_remove_through_the_cli(collection: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, emb, index_dir = collection
    emb2, idx2 = tmp_path / "emb", tmp_path / "idx"
    shutil.copytree(emb, emb2)
    shutil.copytree(index_dir, idx2)
    new_paths = paths_for(10, start=N)
    write_dataset(emb2, new_paths, clustered(10, seed=4), meta=make_meta(DIM, root=load_dataset(emb).meta.root))
    code, output = run("index", "add", idx2, emb2, "--no-progress")
    assert code == 0 and f"10 added, 0 replaced, 0 removed, {N} unchanged; {N + 10} vectors" in output
    data = load_dataset(emb2, embeddings=False)
    listing = tmp_path / "remove.txt"
    listing.write_text(f"# to delete\n{data.ids[0]}\n\n{data.paths[1]}\n")
    code, output = run("index", "remove", idx2, "--from-file", listing, "--id", data.ids[2], "--path", new_paths[0])
    assert code == 0 and f"4 removed, 0 unchanged; {N + 6} vectors" in output
    code, output = run("search", idx2, "--path", data.paths[3], "-k", str(N + 10), "--json", "--expand", "0")
    returned = {r["id"] for r in json.loads(output)["results"]}
    assert len(returned) == N + 6 and not returned & {int(data.ids[i]) for i in (0, 1, 2)}
    code, output = run("index", "remove", idx2)
    assert code == 2 and "--id, --path or --from-file" in output
    code, output = run("index", "remove", idx2, "--id", data.ids[0])
    assert code == 1 and "not in the index" in output


def test_dedup_cli_writes_json_or_csv_and_prints_a_summary(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 32)).astype(np.float32)
    x[[5, 6]] = x[4] + 0.1 * rng.standard_normal((2, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = paths_for(60)
    write_dataset(tmp_path / "emb", paths, x)
    code, output = run("dedup", tmp_path / "emb", "-o", tmp_path / "d.json", "--no-progress", "--no-verify")
    assert code == 0, output
    assert output.strip().endswith(
        "near-duplicate groups: 1 (3 images, 2 redundant) among 60 images at embedding cosine >= 0.95 (not "
        f"verified on the images: lookalikes are grouped too) -> {tmp_path / 'd.json'}"
    )
    group = json.loads((tmp_path / "d.json").read_text())[0]
    assert [m["path"] for m in group] == sorted(paths[4:7])
    first = paths.index(group[0]["path"])
    assert [m["score"] for m in group] == [1.0] + [
        round(float(x[paths.index(m["path"])] @ x[first]), 4) for m in group[1:]
    ]
    code, output = run("dedup", tmp_path / "emb", "-o", tmp_path / "d.csv", "--threshold", "0.999", "--no-verify")
    assert code == 0 and (tmp_path / "d.csv").read_text() == "group,id,path,score\n"  # nothing that close
    code, output = run("dedup", tmp_path / "emb", "--no-verify")
    assert output.startswith(f"group 1 (3): {sorted(paths[4:7])[0]}  {sorted(paths[4:7])[1]} (0.")
    code, output = run("dedup", tmp_path / "emb")  # verifying needs the images: the recorded root is not here
    assert code == 1 and "pass --images-root" in output and "--no-verify" in output
    code, output = run("dedup", tmp_path / "emb", "-o", tmp_path / "d.txt")
    assert code == 1 and "name it .json or .csv" in output


# ------------------------------------------------------------------------------------ end to end, real images


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Photos embedded with the real pipeline (random weights), and their index."""
    base = tmp_path_factory.mktemp("e2e")
    paths = [f"class{i % 2}/photo_{i}.jpg" for i in range(6)]
    for i, rel in enumerate(paths):
        make_photo(base / "images" / rel, (96, 72), seed=i)
    code, output = run("embed", base / "images", "-o", base / "emb", "--weights", "random", "--no-progress")
    assert code == 0, output
    code, output = run("index", "build", base / "emb", "-o", base / "idx", "--augment", "0")
    assert code == 0, output
    return base / "images", base / "idx", paths


def test_image_query_finds_itself_first_with_score_one(embedded: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    images, index_dir, paths = embedded
    page = tmp_path / "page.html"
    code, output = run(
        "search", index_dir, "--image", images / paths[3], "-k", "3", "--json", "--html", page, "--expand", "0"
    )
    assert code == 0, output
    result = json.loads(output.splitlines()[0])
    assert result["query"] == {"image": str(images / paths[3])}
    assert result["results"][0]["path"] == paths[3]
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(re.findall(r'src="data:image/jpeg;base64,', page.read_text())) == 4
    for precision in ("float32", "bfloat16"):  # the query's precision, whatever the index's
        code, output = run("search", index_dir, "--image", images / paths[3], "-k", "1", "--precision", precision)
        assert code == 0 and paths[3] in output.splitlines()[2], output


def test_exclude_self_and_query_kinds_mixed_in_one_call(embedded: tuple[Path, Path, list[str]]) -> None:
    images, index_dir, paths = embedded
    outside = images.parent / "outside.jpg"  # a query file that is not in the index: nothing of it to leave out
    make_photo(outside, (96, 72), seed=3)
    args = ["--path", paths[1], "--image", images / paths[3], "--image", outside, "-k", "2", "--json", "--expand", "0"]
    code, output = run("search", index_dir, *args)
    assert code == 0, output
    kept = [json.loads(line) for line in output.splitlines()]
    assert [r["query"] for r in kept] == [
        {"id": path_id(paths[1]), "path": paths[1]},
        {"image": str(images / paths[3])},
        {"image": str(outside)},
    ]
    assert [r["results"][0]["path"] for r in kept] == [paths[1], paths[3], paths[3]]
    code, output = run("search", index_dir, *args, "--exclude-self")
    assert code == 0, output
    dropped = [json.loads(line) for line in output.splitlines()]
    for before, after, own in zip(kept, dropped, (paths[1], paths[3], None)):
        assert own not in [hit["path"] for hit in after["results"]] and len(after["results"]) == 2
        assert [hit["rank"] for hit in after["results"]] == [1, 2]
        if own is not None:
            assert after["results"][0] == {**before["results"][1], "rank": 1}
    assert dropped[2] == kept[2]


@pytest.mark.skipif(os.name != "posix", reason="names as raw bytes are a POSIX thing")
def test_an_image_query_whose_name_is_not_utf8_is_echoed_as_utf8_text(
    embedded: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    images, index_dir, paths = embedded
    query = raw_name(tmp_path, b"caf\xe9.jpg")
    try:
        shutil.copy(images / paths[2], query)
    except OSError as exc:
        pytest.skip(f"this file system refuses non-UTF-8 names: {exc}")
    code, output = run("search", index_dir, "--image", query, "-k", "1", "--json", "--expand", "0")
    assert code == 0, output
    result = json.loads(output.splitlines()[0])
    result["query"]["image"].encode("utf-8")  # no lone surrogate escapes, which strict JSON readers refuse
    assert result["query"]["image"].endswith("caf\\xe9.jpg") and result["results"][0]["path"] == paths[2]


def test_query_folder_runs_a_batch_and_reports_unreadable_files(
    embedded: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    images, index_dir, paths = embedded
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(images / paths[0], queries / "a.jpg")
    shutil.copy(images / paths[5], queries / "b.jpg")
    (queries / "broken.jpg").write_bytes(b"not a jpeg")
    code, output = run("search", index_dir, "--queries", queries, "-k", "1", "--json", "--expand", "0")
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [(Path(r["query"]["image"]).name, r["results"][0]["path"]) for r in lines] == [
        ("a.jpg", paths[0]),
        ("b.jpg", paths[5]),
    ]
    assert "warning: " in output and "broken.jpg" in output
