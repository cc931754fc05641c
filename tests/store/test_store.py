"""extractor.store: the Parquet embeddings dataset (schema, metadata, atomic parts, lock, errors, the reader)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.errors import DatasetError
from extractor.store import (
    COLUMNS,
    COMPAT_FIELDS,
    ERRORS_NAME,
    LEGACY_LOCK_NAME,
    Dataset,
    DatasetWriter,
    EmbeddingMeta,
    ErrorRecord,
    arrow_schema,
    dataset_lock,
    list_parts,
    load_dataset,
    open_for_writing,
    path_id,
    read_errors,
    read_meta,
)
from tests.format1 import format1_json, format1_record
from tests.storedata import DIM, make_meta, make_rows, write_dataset

REPO = Path(__file__).resolve().parents[2]
ALL_COLUMNS = COLUMNS[:-1]  # every column but the embedding


PATHS = ["cats/a.jpg", "cats/b c.jpg", "dogs/é😀.png", "loose.jpg", "dogs/d.jpg", "birds/e.jpg", "birds/f.jpg"]


# ------------------------------------------------------------------------------------------ schema, ids, meta


def test_path_id_is_the_masked_big_endian_sha256_prefix_and_fits_int64() -> None:
    for rel in PATHS + [f"x/{i}.jpg" for i in range(200)]:
        digest = hashlib.sha256(rel.encode("utf-8")).digest()
        assert path_id(rel) == int.from_bytes(digest[:8], "big") % 2**63
        assert 0 <= path_id(rel) < 2**63
    # some of these paths have the top bit set in their hash: masking, not overflow, keeps them in range
    assert any(hashlib.sha256(f"x/{i}.jpg".encode()).digest()[0] >= 128 for i in range(200))
    assert path_id("a/b.jpg") != path_id("a\\b.jpg")


def test_arrow_schema_has_exactly_the_design_columns_and_metadata() -> None:
    schema = arrow_schema(make_meta(dim=256))
    assert schema.names == ["id", "path", "label", "sha256", "size", "mtime_ns", "width", "height", "embedding"]
    assert [str(t) for t in schema.types] == [
        "int64",
        "string",
        "string",
        "fixed_size_binary[32]",
        "int64",
        "int64",
        "int32",
        "int32",
        "fixed_size_list<item: float>[256]",
    ]
    assert [f.name for f in schema if f.nullable] == ["label"]
    assert EmbeddingMeta.from_dict(json.loads(schema.metadata[b"alexfeat"])) == make_meta(dim=256)


def test_meta_differences_name_only_the_compatibility_fields() -> None:
    base = make_meta()
    moved = make_meta(root="elsewhere", weights_source="other/path.npz", package_version="9.9")
    assert base.differences(moved) == []
    base.check_compatible(moved, "never raised")
    other = make_meta(arch="torchvision", dim=16, input_size=224)
    assert base.differences(other) == ["arch: caffe != torchvision", "input_size: 227 != 224", "dim: 8 != 16"]
    with pytest.raises(DatasetError, match=r"^the thing: arch: caffe != torchvision; input_size.*dim: 8 != 16\. Do X"):
        base.check_compatible(other, "the thing", hint="Do X")
    assert set(COMPAT_FIELDS) == {"arch", "weights_sha256", "layer", "pooling", "input_size", "resize", "dim", "tta"}


def test_meta_from_a_newer_format_or_with_missing_fields_is_refused(tmp_path: Path) -> None:
    data = make_meta().to_dict()
    assert EmbeddingMeta.from_dict(data) == make_meta()
    with pytest.raises(DatasetError, match="newer alexfeat"):
        EmbeddingMeta.from_dict({**data, "format_version": 99})
    with pytest.raises(DatasetError, match="^where: alexfeat metadata is invalid"):
        EmbeddingMeta.from_dict({**data, "dim": "8"}, where="where")
    del data["dim"]
    with pytest.raises(DatasetError, match="lacks dim"):
        EmbeddingMeta.from_dict(data)
    # The same errors reach a reader of a part whose metadata is broken, naming the file.
    write_dataset(tmp_path / "emb", PATHS[:1])
    part = list_parts(tmp_path / "emb")[0]
    table = pq.read_table(part)
    for raw, message in ((b"{", "is not valid JSON"), (json.dumps(data).encode(), "lacks dim")):
        pq.write_table(table.replace_schema_metadata({b"alexfeat": raw}), part)
        with pytest.raises(DatasetError, match=f"^{re.escape(str(part))}: alexfeat metadata {message}"):
            load_dataset(tmp_path / "emb")


def test_a_field_added_later_is_one_line_with_a_default_for_older_files() -> None:
    @dataclass(frozen=True)
    class WithPrecision(EmbeddingMeta):
        precision: str = "float32"

    old = format1_record(make_meta())
    meta = WithPrecision.from_dict(old)
    assert meta.precision == "float32" and EmbeddingMeta.from_dict(old) == make_meta(package_version="0.1.0")
    assert "precision" in WithPrecision.compat_fields() and "precision" not in COMPAT_FIELDS
    assert meta.differences(replace(meta, precision="float16")) == ["precision: float32 != float16"]
    assert WithPrecision.from_dict(replace(meta, precision="float16").to_dict()).precision == "float16"


def test_a_dataset_written_by_format_1_loads_and_takes_new_rows(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:3])
    part = list_parts(out)[0]
    old_meta = format1_json(make_meta())
    pq.write_table(pq.read_table(part).replace_schema_metadata({b"alexfeat": old_meta}), part)  # as 0.1.0 wrote it
    assert read_meta(out) == make_meta(package_version="0.1.0")
    with open_for_writing(out, make_meta()) as writer:  # the same settings: compatible, whatever the version
        writer.add(make_rows(PATHS[3:5]))
    data = load_dataset(out, expect=make_meta())
    assert sorted(data.paths) == sorted(PATHS[:5]) and len(list_parts(out)) == 2
    assert pq.read_schema(part).metadata[b"alexfeat"] == old_meta  # the old part was left as it was


def test_round_trip_keeps_every_column_exactly(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    rows = write_dataset(out, PATHS, rows_per_part=3)
    assert [p.name for p in list_parts(out)] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    data = load_dataset(out, columns=ALL_COLUMNS)
    assert isinstance(data, Dataset) and len(data) == len(PATHS)
    assert data.meta == make_meta()
    assert data.paths == PATHS
    assert data.labels == ["cats", "cats", "dogs", None, "dogs", "birds", "birds"]
    assert data.ids.dtype == np.int64 and data.ids.tolist() == [path_id(p) for p in PATHS]
    assert data.vectors.dtype == np.float32 and data.vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(data.vectors, rows["embedding"])
    assert data.sha256 == rows["sha256"]
    np.testing.assert_array_equal(data.size, rows["size"])
    np.testing.assert_array_equal(data.mtime_ns, rows["mtime_ns"])
    assert data.width.tolist() == [640] * 7 and data.height.tolist() == [480] * 7


def test_default_load_gives_ids_paths_labels_and_vectors_only(tmp_path: Path) -> None:
    write_dataset(tmp_path / "emb", PATHS[:2])
    data = load_dataset(tmp_path / "emb")
    assert data.paths == PATHS[:2] and data.labels == ["cats", "cats"] and data.vectors.shape == (2, DIM)
    assert data.sha256 is None and data.size is None and data.mtime_ns is None and data.width is None
    assert data.get_paths() == PATHS[:2] and data.get_vectors() is data.vectors


def test_typed_accessors_name_the_argument_that_reads_a_missing_column(tmp_path: Path) -> None:
    write_dataset(tmp_path / "emb", PATHS[:2])
    data = load_dataset(tmp_path / "emb", columns=("id",), embeddings=False)
    with pytest.raises(ValueError, match=r"vectors were not read: pass embeddings=True"):
        data.get_vectors()
    with pytest.raises(ValueError, match=r"paths were not read: pass 'path' in columns="):
        data.get_paths()
    with pytest.raises(ValueError, match=r"sha256 were not read: pass 'sha256' in columns="):
        data.get_sha256()


def test_every_part_carries_the_metadata_as_json(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS, rows_per_part=4)
    for part in list_parts(out):
        meta = json.loads(pq.read_schema(part).metadata[b"alexfeat"])
        assert meta["arch"] == "caffe" and meta["dim"] == DIM and meta["format_version"] == 1
        assert set(meta) == {
            "format_version",
            "arch",
            "weights_source",
            "weights_sha256",
            "layer",
            "pooling",
            "input_size",
            "resize",
            "dim",
            "tta",
            "root",
            "package_version",
        }
    assert read_meta(out) == make_meta()


def test_plain_pyarrow_reads_the_directory_as_the_embeddings_alone(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta(), rows_per_part=3) as writer:
        writer.add(make_rows(PATHS))
        writer.add_errors([ErrorRecord("broken.jpg", "DecodeError", "truncated", 10, 20)])
        writer.flush()
        (out / ".part-00009.parquet.tmp").write_bytes(b"half a file")  # as a job killed mid-write leaves
        assert ERRORS_NAME in os.listdir(out)
        table = pq.read_table(out)  # while the writer still holds the lock
    assert table.column_names == list(COLUMNS)
    assert table.num_rows == len(PATHS)
    assert sorted(table.column("path").to_pylist()) == sorted(PATHS)
    assert table.column("embedding").type == pa.list_(pa.float32(), DIM)


@pytest.fixture
def dataset_with_errors(tmp_path: Path) -> Path:
    """Several parts and an errors table, as a job with one failed file leaves them."""
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta(), rows_per_part=3) as writer:
        writer.add(make_rows(PATHS))
        writer.add_errors([ErrorRecord("broken.jpg", "DecodeError", "truncated", 10, 20)])
    assert len(list_parts(out)) > 1 and (out / ERRORS_NAME).exists()
    return out


def test_duckdb_reads_the_glob_as_the_embeddings_alone(dataset_with_errors: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    glob = f"'{dataset_with_errors}/*.parquet'"
    assert duckdb.sql(f"SELECT count(*) FROM {glob}").fetchall() == [(len(PATHS),)]
    rows = duckdb.sql(f"SELECT path, embedding FROM {glob} ORDER BY path").fetchall()
    assert [r[0] for r in rows] == sorted(PATHS) and len(rows[0][1]) == DIM
    first = sorted(PATHS)[0]
    ranked = duckdb.sql(  # the README's ranking query
        f"SELECT path, array_cosine_similarity(embedding::FLOAT[{DIM}], "
        f"(SELECT embedding FROM {glob} WHERE path = '{first}')::FLOAT[{DIM}]) AS score "
        f"FROM {glob} ORDER BY score DESC LIMIT 3"
    ).fetchall()
    assert ranked[0][0] == first and ranked[0][1] == pytest.approx(1.0, abs=1e-5)


def test_polars_reads_the_directory_and_the_glob(dataset_with_errors: Path) -> None:
    pl = pytest.importorskip("polars")
    for source in (dataset_with_errors, f"{dataset_with_errors}/*.parquet"):
        frame = pl.read_parquet(source)
        assert frame.columns == list(COLUMNS)
        assert sorted(frame["path"].to_list()) == sorted(PATHS)


def test_pandas_and_pyarrow_read_the_directory(dataset_with_errors: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(dataset_with_errors)
    assert sorted(frame["path"]) == sorted(PATHS) and list(frame.columns) == list(COLUMNS)
    table = pq.read_table(dataset_with_errors)
    assert sorted(table.column("path").to_pylist()) == sorted(PATHS)
    assert read_errors(dataset_with_errors).column("path").to_pylist() == ["broken.jpg"]


def test_the_layout_before_is_read_and_moved_by_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:2])
    legacy = pa.table(  # an older version's errors table (records as rows) and lock file
        {"path": ["broken.jpg"], "error": ["DecodeError"], "message": ["truncated"], "size": [10], "mtime_ns": [20]}
    )
    pq.write_table(legacy, out / ERRORS_NAME)
    (out / LEGACY_LOCK_NAME).write_text("123\n")
    assert read_errors(out).to_pylist() == legacy.to_pylist()
    assert len(load_dataset(out)) == 2
    with open_for_writing(out, make_meta()) as writer:
        writer.add(make_rows(PATHS[2:3]))
    assert sorted(os.listdir(out)) == [ERRORS_NAME, "part-00000.parquet", "part-00001.parquet"]
    assert pq.read_metadata(out / ERRORS_NAME).num_rows == 0
    assert read_errors(out).to_pylist() == legacy.to_pylist()
    assert sorted(pq.read_table(out).column("path").to_pylist()) == sorted(PATHS[:3])


def test_damaged_error_records_are_a_clear_error(dataset_with_errors: Path) -> None:
    path = dataset_with_errors / ERRORS_NAME
    schema = pq.read_schema(path)
    pq.write_table(schema.with_metadata({**schema.metadata, b"alexfeat_errors": b"[{not json"}).empty_table(), path)
    with pytest.raises(DatasetError, match="holds unreadable error records.*Delete it"):
        read_errors(dataset_with_errors)


def test_an_older_job_holding_the_old_lock_file_is_respected(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    out.mkdir()
    proc = _holder(
        "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"  # as older versions did
        "fcntl.flock(fd, fcntl.LOCK_EX)\nos.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n",
        str(out / LEGACY_LOCK_NAME),
    )
    try:
        with pytest.raises(DatasetError, match=rf"being written by another alexfeat job \(pid {proc.pid}\)"):
            open_for_writing(out, make_meta())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_for_writing(out, make_meta()):
        pass
    assert not (out / LEGACY_LOCK_NAME).exists()


def test_embeddings_of_wrong_shape_or_non_finite_are_refused(tmp_path: Path) -> None:
    with open_for_writing(tmp_path / "emb", make_meta()) as writer:
        rows = make_rows(["a.jpg"])
        with pytest.raises(ValueError, match=r"\(n, 8\) matrix"):
            writer.add({**rows, "embedding": np.zeros((1, 4), np.float32)})
        with pytest.raises(ValueError, match="NaN"):
            writer.add({**rows, "embedding": np.full((1, DIM), np.nan, np.float32)})
        with pytest.raises(ValueError, match="path_id"):
            writer.add({**rows, "id": [5]})
    assert list_parts(tmp_path / "emb") == []


# --------------------------------------------------------------------------------------- reopen, overwrite


def test_reopening_appends_with_the_next_part_number(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:4], rows_per_part=2)
    (out / "part-00000.parquet").unlink()
    with open_for_writing(out, make_meta(root="moved/images", package_version="0.2.0")) as writer:
        writer.add(make_rows(PATHS[4:]))
    assert [p.name for p in list_parts(out)] == ["part-00001.parquet", "part-00002.parquet"]
    assert read_meta(out).root == "moved/images"  # the newest part's settings; root never decides compatibility
    assert load_dataset(out).paths == PATHS[2:]


def test_an_existing_id_is_refused_until_its_row_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:3])
    with open_for_writing(out, make_meta()) as writer:
        with pytest.raises(DatasetError, match=r"'cats/a.jpg' is already in .*dropped"):
            writer.add(make_rows(["new.jpg", "cats/a.jpg"]))
        writer.add(make_rows(["new.jpg"]))
        with pytest.raises(DatasetError, match="'new.jpg' is already"):  # still buffered, not yet on disk
            writer.add(make_rows(["new.jpg"]))
        assert writer.drop_ids([path_id("cats/a.jpg")]) == 1
        writer.add(make_rows(["cats/a.jpg"], seed=1))
    ids = pq.read_table(out).column("id").to_numpy()
    assert len(ids) == 4 and len(np.unique(ids)) == 4


def test_incompatible_settings_are_refused_naming_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:2])
    with pytest.raises(DatasetError, match=r"arch: caffe != torchvision.*--overwrite.*another output directory"):
        open_for_writing(out, make_meta(arch="torchvision"))
    with pytest.raises(DatasetError, match=r"pooling: avg != max"):
        open_for_writing(out, make_meta(pooling="max"))
    with open_for_writing(out, make_meta()):  # the refusals released the lock
        pass
    assert load_dataset(out).paths == PATHS[:2]


def test_overwrite_replaces_parts_and_errors_but_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta()) as writer:
        writer.add(make_rows(PATHS))
        writer.add_errors([ErrorRecord("bad.jpg", "DecodeError", "empty file", 0, 1)])
    (out / "_notes").write_text("kept: starts with _")
    other = make_meta(arch="torchvision", input_size=224, dim=4)
    with open_for_writing(out, other, overwrite=True) as writer:
        writer.add(make_rows(["x/new.jpg"], dim=4))
    data = load_dataset(out)
    assert data.paths == ["x/new.jpg"] and data.meta == other and data.vectors.shape == (1, 4)
    assert read_errors(out).num_rows == 0 and not (out / ERRORS_NAME).exists()
    assert (out / "_notes").read_text() == "kept: starts with _"


def test_a_directory_that_is_not_a_dataset_is_never_touched(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match=r"not an alexfeat embeddings directory \(it holds holiday.jpg\)"):
            open_for_writing(out, make_meta(), overwrite=overwrite)
    assert os.listdir(out) == ["holiday.jpg"]
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_an_output_that_cannot_be_a_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="cannot create output directory"):
        open_for_writing(blocker / "emb", make_meta())
    with pytest.raises(DatasetError, match="exists and is not a directory"):
        open_for_writing(blocker, make_meta())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_a_read_only_output_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(DatasetError, match="cannot write to"):
            open_for_writing(out, make_meta())
    finally:
        out.chmod(0o700)


# ---------------------------------------------------------------------------------------------------- lock


def _holder(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_second_job_is_refused_and_a_killed_job_leaves_no_stale_lock(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    out.mkdir()
    proc = _holder(
        "import sys, time\nfrom extractor.store import dataset_lock\n"
        "with dataset_lock(sys.argv[1]):\n    print('ready', flush=True)\n    time.sleep(60)\n",
        str(out),
    )
    try:
        with pytest.raises(DatasetError, match=rf"being written by another alexfeat job \(pid {proc.pid}\)"):
            open_for_writing(out, make_meta())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_for_writing(out, make_meta()) as writer:
        writer.add(make_rows(PATHS[:1]))
    assert load_dataset(out).paths == PATHS[:1]


def test_two_writers_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta()):
        with pytest.raises(DatasetError, match=f"pid {os.getpid()}"):
            open_for_writing(out, make_meta())
        with pytest.raises(DatasetError, match="another alexfeat job"), dataset_lock(out):
            pass
    with dataset_lock(out):
        pass


def test_a_job_killed_while_writing_leaves_only_complete_parts(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    code = (
        "import sys, itertools\nfrom tests.storedata import make_meta, make_rows\n"
        "from extractor.store import open_for_writing\n"
        "writer = open_for_writing(sys.argv[1], make_meta(dim=64), rows_per_part=500)\n"
        "print('ready', flush=True)\n"
        "for i in itertools.count():\n"
        "    writer.add(make_rows([f'd/{i}-{j}.jpg' for j in range(100)], dim=64, seed=i))\n"
    )
    proc = _holder(code, str(out))
    try:
        deadline = time.monotonic() + 60
        while len(list_parts(out)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    parts = list_parts(out)
    assert len(parts) >= 3
    data = load_dataset(out)  # every part is complete and readable
    assert len(data) == 500 * len(parts) and len(np.unique(data.ids)) == len(data)
    with open_for_writing(out, make_meta(dim=64)) as writer:  # no stale lock; leftovers of the kill are removed
        writer.add(make_rows(["after.jpg"], dim=64))
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]
    assert len(load_dataset(out, embeddings=False)) == len(data) + 1


# ----------------------------------------------------------------------------------- drop and update rows


def test_drop_ids_rewrites_parts_and_deletes_parts_left_empty(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    rows = write_dataset(out, PATHS, rows_per_part=3)  # parts: 3 + 3 + 1 rows
    gone = ["cats/a.jpg", "birds/f.jpg", "nobody.jpg"]
    with open_for_writing(out, make_meta()) as writer:
        assert writer.drop_ids([path_id(p) for p in gone]) == 2
        writer.add(make_rows(["cats/a.jpg"], seed=5))  # re-embedded: a new row, the id stays unique
    assert [p.name for p in list_parts(out)] == ["part-00000.parquet", "part-00001.parquet", "part-00003.parquet"]
    assert pq.read_table(out / "part-00000.parquet").num_rows == 2
    assert read_meta(out) == make_meta()  # the rewritten part kept its metadata
    data = load_dataset(out)
    assert len(np.unique(data.ids)) == len(data) == 6
    assert data.paths == PATHS[1:6] + ["cats/a.jpg"]
    np.testing.assert_array_equal(data.vectors[:5], rows["embedding"][1:6])
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_crash_while_rewriting_a_part_keeps_the_old_part_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS)

    def crash_midway(table: pa.Table, where: object, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 half written")
        raise OSError(28, "No space left on device")

    writer = open_for_writing(out, make_meta())
    monkeypatch.setattr(pq, "write_table", crash_midway)
    with pytest.raises(DatasetError, match="cannot write .*part-00000.parquet.*No space left"):
        writer.drop_ids([path_id(PATHS[0])])
    monkeypatch.undo()
    writer.close()
    assert load_dataset(out).paths == PATHS
    assert sorted(os.listdir(out)) == ["part-00000.parquet"]


def test_update_file_stats_changes_only_the_given_rows(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    rows = write_dataset(out, PATHS, rows_per_part=3)
    with open_for_writing(out, make_meta()) as writer:
        assert writer.update_file_stats({path_id("dogs/d.jpg"): (7, 8), path_id("birds/f.jpg"): (9, 10)}) == 2
    data = load_dataset(out, columns=ALL_COLUMNS)
    expected_size = rows["size"].copy()
    expected_mtime = rows["mtime_ns"].copy()
    expected_size[[4, 6]] = [7, 9]
    expected_mtime[[4, 6]] = [8, 10]
    np.testing.assert_array_equal(data.size, expected_size)
    np.testing.assert_array_equal(data.mtime_ns, expected_mtime)
    np.testing.assert_array_equal(data.vectors, rows["embedding"])
    assert data.paths == PATHS and data.sha256 == rows["sha256"]


def test_buffered_rows_are_written_when_the_job_stops_on_an_exception(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with pytest.raises(KeyboardInterrupt), open_for_writing(out, make_meta()) as writer:
        writer.add(make_rows(PATHS[:2]))
        raise KeyboardInterrupt
    assert load_dataset(out).paths == PATHS[:2]


def test_rows_older_than_max_part_seconds_are_written(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta(), max_part_seconds=0.0) as writer:
        writer.add(make_rows(PATHS[:1]))
        assert len(list_parts(out)) == 1  # on disk before close: a kill now would lose nothing
        writer.add(make_rows(PATHS[1:2]))
        assert len(list_parts(out)) == 2


# --------------------------------------------------------------------------------------------------- errors


def test_errors_are_merged_and_forgotten_once_embedded_or_dropped(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta()) as writer:
        writer.add_errors(
            [
                ErrorRecord("a.jpg", "DecodeError", "truncated", 5, 6),
                ErrorRecord("b.jpg", "DecodeError", "not an image", 7, 8),
            ]
        )
    assert read_errors(out).to_pylist() == [
        {"path": "a.jpg", "error": "DecodeError", "message": "truncated", "size": 5, "mtime_ns": 6},
        {"path": "b.jpg", "error": "DecodeError", "message": "not an image", "size": 7, "mtime_ns": 8},
    ]
    with open_for_writing(out, make_meta()) as writer:
        writer.add(make_rows(["a.jpg"]))  # fixed since: embedded now
        writer.add_errors(
            [
                ErrorRecord("b.jpg", "DecodeError", "too many pixels", 70, 80),
                ErrorRecord("c.jpg", "OSError", "permission denied"),
            ]
        )
    assert read_errors(out).to_pylist() == [
        {"path": "b.jpg", "error": "DecodeError", "message": "too many pixels", "size": 70, "mtime_ns": 80},
        {"path": "c.jpg", "error": "OSError", "message": "permission denied", "size": None, "mtime_ns": None},
    ]
    with open_for_writing(out, make_meta()) as writer:
        assert writer.drop_errors(["b.jpg", "c.jpg", "never.jpg"]) == 2
    assert read_errors(out).num_rows == 0
    assert load_dataset(out).paths == ["a.jpg"]


def test_a_dataset_with_only_errors_says_so(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    with open_for_writing(out, make_meta()) as writer:
        writer.add_errors([ErrorRecord("a.jpg", "DecodeError", "empty file", 0, 1)])
    with pytest.raises(DatasetError, match=r"holds no embeddings \(all files failed: see _errors.parquet\)"):
        load_dataset(out)
    assert read_errors(out).column("path").to_pylist() == ["a.jpg"]


# --------------------------------------------------------------------------------------------------- reader


def test_missing_or_empty_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="does not exist"):
        read_errors(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"holds no embeddings: no part-\*.parquet files.*alexfeat embed"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="holds no embeddings"):
        read_meta(tmp_path / "empty")


def test_loading_without_embeddings_never_reads_the_embedding_column(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS)
    part = out / "part-00000.parquet"
    chunk = pq.read_metadata(part).row_group(0).column(COLUMNS.index("embedding"))
    assert chunk.path_in_schema.startswith("embedding")
    with open(part, "r+b") as fh:  # destroy the embedding column's pages, leaving the footer intact
        fh.seek(chunk.data_page_offset)
        fh.write(b"\xff" * chunk.total_compressed_size)
    data = load_dataset(out, columns=ALL_COLUMNS, embeddings=False)
    assert data.paths == PATHS and data.vectors is None and len(data.sha256) == len(PATHS)
    with pytest.raises(DatasetError, match=r"part-00000.parquet is not a readable Parquet file"):
        load_dataset(out)


def test_a_truncated_part_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS, rows_per_part=4)
    part = out / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-100])
    for read in (load_dataset, read_meta, lambda d: open_for_writing(d, make_meta())):
        with pytest.raises(DatasetError, match=r"part-00001.parquet is not a readable Parquet file.*truncated"):
            read(out)


def test_parts_made_with_different_models_are_never_mixed(tmp_path: Path) -> None:
    out, other = tmp_path / "emb", tmp_path / "other"
    write_dataset(out, PATHS[:2])
    write_dataset(other, PATHS[2:4], meta=make_meta(weights_sha256="cd" * 32))
    (other / "part-00000.parquet").rename(out / "part-00001.parquet")
    with pytest.raises(
        DatasetError,
        match=r"part-00000.parquet and part-00001.parquet .* different model settings: "
        r"weights_sha256: abab.* != cdcd",
    ):
        load_dataset(out, embeddings=False)
    with pytest.raises(DatasetError, match="weights_sha256"):
        read_meta(out)


def test_load_checks_the_expected_model(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:2])
    assert len(load_dataset(out, expect=make_meta(root="anywhere"))) == 2
    with pytest.raises(DatasetError, match=r"other settings than the model in use .*layer: pool5 != fc7"):
        load_dataset(out, expect=make_meta(layer="fc7"))


def test_a_parquet_part_not_written_by_alexfeat_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    out.mkdir()
    pq.write_table(pa.table({"id": [1], "path": ["a.jpg"]}), out / "part-00000.parquet")
    with pytest.raises(DatasetError, match="has no alexfeat metadata"):
        load_dataset(out)
    good = arrow_schema(make_meta())
    pq.write_table(pa.table({"id": [1]}).replace_schema_metadata(good.metadata), out / "part-00000.parquet")
    with pytest.raises(DatasetError, match="column 'path' should be string, found missing"):
        read_meta(out)


def test_stale_tmp_parts_are_ignored_by_readers_and_removed_by_the_writer(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    write_dataset(out, PATHS[:3])
    for name in (".part-00001.parquet.tmp", "._errors.parquet.tmp"):
        (out / name).write_bytes(b"PAR1 killed mid-write")
    assert load_dataset(out).paths == PATHS[:3]
    assert pq.read_table(out).num_rows == 3
    with open_for_writing(out, make_meta()) as writer:
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
        writer.add(make_rows(PATHS[3:4]))
    assert [p.name for p in list_parts(out)] == ["part-00000.parquet", "part-00001.parquet"]
    assert load_dataset(out).paths == PATHS[:4]


def test_wide_embeddings_get_smaller_parts_and_load_as_one_matrix(tmp_path: Path) -> None:
    out = tmp_path / "emb"
    meta = make_meta(layer="fc7", pooling=None, dim=4096)
    with DatasetWriter(out, meta) as writer:
        assert writer.rows_per_part == 8192  # 128 MiB of vectors per part
    paths = [f"c{i % 3}/{i}.jpg" for i in range(40)]
    rows = write_dataset(out, paths, meta=meta, rows_per_part=16)
    data = load_dataset(out)
    assert len(list_parts(out)) == 3 and data.vectors.shape == (40, 4096) and data.vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(data.vectors, rows["embedding"])
    assert data.meta.pooling is None


# ----------------------------------------------------------------------------------- silent corruption of a part


def _flip_byte_in_embeddings(part: Path) -> None:
    """XOR one byte in the middle of the embedding column's compressed pages; the footer stays intact."""
    chunk = pq.read_metadata(part).row_group(0).column(COLUMNS.index("embedding"))
    where = chunk.data_page_offset + chunk.total_compressed_size // 2
    data = bytearray(part.read_bytes())
    data[where] ^= 0x01
    part.write_bytes(bytes(data))


def test_a_flipped_byte_inside_a_data_page_is_caught_by_its_checksum(tmp_path: Path) -> None:
    from index.build import build_index_dir

    out = tmp_path / "emb"
    write_dataset(out, [f"c/{i}.jpg" for i in range(300)])
    part = out / "part-00000.parquet"
    _flip_byte_in_embeddings(part)
    silent = pq.ParquetFile(part).read()  # without verification the page still decodes: the damage is silent
    assert silent.num_rows == 300
    for read in (load_dataset, lambda d: build_index_dir(d, tmp_path / "idx")):
        with pytest.raises(DatasetError, match=r"part-00000.parquet is not a readable Parquet file.*CRC.*Delete it"):
            read(out)


def test_vectors_that_are_not_unit_length_are_a_clear_error(tmp_path: Path) -> None:
    rows = make_rows(PATHS)
    rows["embedding"][2] *= 1.5  # type: ignore[index]
    with open_for_writing(tmp_path / "emb", make_meta()) as writer:
        writer.add(rows)
    with pytest.raises(DatasetError, match=r"part-00000.parquet is corrupt: 1 of its embeddings are not unit-length"):
        load_dataset(tmp_path / "emb")
