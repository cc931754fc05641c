"""extractor.embed.resume: what a rerun embeds, keeps and drops, on real files and a real dataset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from extractor.embed.resume import apply_plan, load_existing, plan_resume
from extractor.images.discover import FileEntry, discover
from extractor.images.sources import entry_sha256
from extractor.store import ErrorRecord, load_dataset, open_for_writing, path_id, read_errors
from extractor.util.hashing import file_sha256
from tests.storedata import make_meta, make_rows

T0 = 1_600_000_000_000_000_000  # a fixed mtime (ns), so tests do not depend on the clock


class CountingHash:
    """``entry_sha256`` that remembers which files it read."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, entry: FileEntry) -> bytes:
        self.paths.append(entry.abs_path)
        return entry_sha256(entry)


def put(root: Path, rel: str, data: bytes, mtime_ns: int = T0) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def embed(out: Path, entries: list[FileEntry]) -> None:
    """Write rows for ``entries`` as the embed job does (real sha256, size and mtime; stand-in vectors)."""
    rows = make_rows([e.path for e in entries])
    rows.update(
        sha256=[file_sha256(e.abs_path) for e in entries],
        size=[e.size for e in entries],
        mtime_ns=[e.mtime_ns for e in entries],
    )
    with open_for_writing(out, make_meta()) as writer:
        writer.add(rows)


def rerun(root: Path, out: Path, prune: bool = False, hash_entry=entry_sha256, retry_errors: bool = False):
    return plan_resume(
        discover(root),
        load_existing(out),
        prune=prune,
        hash_entry=hash_entry,
        errors=read_errors(out),
        retry_errors=retry_errors,
    )


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """Five embedded files, then: b touched (same bytes), c and d changed, a deleted, e added."""
    root, out = tmp_path / "images", tmp_path / "emb"
    for name in "abcd":
        put(root, f"cls/{name}.jpg", f"photo {name}".encode())
    put(root, "cls/keep.jpg", b"never changes")
    embed(out, list(discover(root)))
    put(root, "cls/b.jpg", b"photo b", mtime_ns=T0 + 1)  # touched: same content, new mtime
    put(root, "cls/c.jpg", b"PHOTO c", mtime_ns=T0 + 1)  # same size, other content
    put(root, "cls/d.jpg", b"a longer photo d")  # other size, same mtime
    (root / "cls" / "a.jpg").unlink()
    put(root, "new/e.jpg", b"photo e")
    return root, out


def test_file_sha256_streams_files_larger_than_a_chunk(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "big.bin").write_bytes(data)
    assert file_sha256(tmp_path / "big.bin") == hashlib.sha256(data).digest()
    assert file_sha256(tmp_path / "big.bin", chunk_size=1000) == hashlib.sha256(data).digest()


def test_a_first_run_embeds_everything(tmp_path: Path) -> None:
    for name in ("b.jpg", "a/x.png", "a/y.jpg"):
        put(tmp_path / "images", name, name.encode())
    assert load_existing(tmp_path / "emb") is None
    plan = plan_resume(discover(tmp_path / "images"), None, prune=True)
    assert [e.path for e in plan.to_embed] == ["a/x.png", "a/y.jpg", "b.jpg"]
    assert (plan.new, plan.unchanged, plan.drop_ids, plan.vanished) == (3, 0, [], 0)


def test_an_unchanged_tree_needs_nothing_and_reads_no_file(tmp_path: Path) -> None:
    root, out = tmp_path / "images", tmp_path / "emb"
    for name in ("a.jpg", "b/c.jpg"):
        put(root, name, name.encode())
    embed(out, list(discover(root)))
    hashes = CountingHash()
    plan = rerun(root, out, prune=True, hash_entry=hashes)
    assert (plan.to_embed, plan.unchanged, plan.drop_ids, plan.vanished) == ([], 2, [], 0)
    assert hashes.paths == []


def test_new_changed_touched_and_vanished_files(tree: tuple[Path, Path]) -> None:
    root, out = tree
    hashes = CountingHash()
    plan = rerun(root, out, hash_entry=hashes)
    assert [e.path for e in plan.to_embed] == ["cls/c.jpg", "cls/d.jpg", "new/e.jpg"]  # in walk order
    assert (plan.new, plan.changed, plan.touched, plan.unchanged, plan.vanished) == (1, 2, 1, 2, 1)
    assert sorted(plan.drop_ids) == sorted([path_id("cls/c.jpg"), path_id("cls/d.jpg")])  # a.jpg stays
    entry_b = next(e for e in discover(root) if e.path == "cls/b.jpg")
    assert plan.stats_updates == {path_id("cls/b.jpg"): (entry_b.size, T0 + 1)}
    # only files of the same size with another mtime are hashed; another size means other content
    assert sorted(Path(p).name for p in hashes.paths) == ["b.jpg", "c.jpg"]


def test_prune_drops_the_rows_of_vanished_files(tree: tuple[Path, Path]) -> None:
    root, out = tree
    plan = rerun(root, out, prune=True)
    assert plan.vanished == 1
    assert sorted(plan.drop_ids) == sorted(path_id(f"cls/{n}.jpg") for n in "acd")


def test_applying_a_plan_then_embedding_makes_the_next_rerun_a_no_op(tree: tuple[Path, Path]) -> None:
    root, out = tree
    plan = rerun(root, out, prune=True)
    with open_for_writing(out, make_meta()) as writer:
        apply_plan(writer, plan)
    embed(out, plan.to_embed)
    data = load_dataset(out, columns=("path", "size", "mtime_ns"), embeddings=False)
    assert sorted(data.paths) == ["cls/b.jpg", "cls/c.jpg", "cls/d.jpg", "cls/keep.jpg", "new/e.jpg"]
    assert len(np.unique(data.ids)) == len(data)
    b = data.paths.index("cls/b.jpg")
    assert (data.size[b], data.mtime_ns[b]) == (len(b"photo b"), T0 + 1)  # refreshed: not hashed again
    hashes = CountingHash()
    again = rerun(root, out, prune=True, hash_entry=hashes)
    assert (again.to_embed, again.drop_ids, again.unchanged, hashes.paths) == ([], [], 5, [])


def test_a_file_that_cannot_be_read_for_hashing_is_embedded_again(tree: tuple[Path, Path]) -> None:
    root, out = tree

    def unreadable(entry: FileEntry) -> bytes:
        raise PermissionError(13, "Permission denied", entry.abs_path)

    plan = rerun(root, out, hash_entry=unreadable)
    assert [e.path for e in plan.to_embed] == ["cls/b.jpg", "cls/c.jpg", "cls/d.jpg", "new/e.jpg"]
    assert path_id("cls/b.jpg") in plan.drop_ids and plan.stats_updates == {}


def test_files_that_failed_are_retried_only_when_they_change(tmp_path: Path) -> None:
    root, out = tmp_path / "images", tmp_path / "emb"
    put(root, "ok.jpg", b"fine")
    put(root, "broken.jpg", b"not an image")
    put(root, "fixed.jpg", b"not an image either")
    put(root, "gone.jpg", b"junk")
    entries = {e.path: e for e in discover(root)}
    embed(out, [entries["ok.jpg"]])
    with open_for_writing(out, make_meta()) as writer:
        writer.add_errors(
            ErrorRecord(p, "DecodeError", "cannot identify image", entries[p].size, entries[p].mtime_ns)
            for p in ("broken.jpg", "fixed.jpg", "gone.jpg")
        )
        writer.add_errors([ErrorRecord("locked", "unreadable", "cannot list or stat it")])  # a folder: no size
    put(root, "fixed.jpg", b"a real image now", mtime_ns=T0 + 5)
    (root / "gone.jpg").unlink()

    plan = rerun(root, out)
    assert [e.path for e in plan.to_embed] == ["fixed.jpg"]
    assert (plan.skipped_errors, plan.new, plan.unchanged, plan.stale_error_paths) == (1, 1, 1, ["locked"])
    assert [e.path for e in rerun(root, out, retry_errors=True).to_embed] == ["broken.jpg", "fixed.jpg"]

    pruned = rerun(root, out, prune=True)
    assert sorted(pruned.stale_error_paths) == ["gone.jpg", "locked"]
    with open_for_writing(out, make_meta()) as writer:
        apply_plan(writer, pruned)
    assert sorted(read_errors(out).column("path").to_pylist()) == ["broken.jpg", "fixed.jpg"]


def test_existing_rows_must_come_with_the_resume_columns(tmp_path: Path) -> None:
    root, out = tmp_path / "images", tmp_path / "emb"
    put(root, "a.jpg", b"a")
    embed(out, list(discover(root)))
    with pytest.raises(ValueError, match="columns"):
        plan_resume(discover(root), load_dataset(out), prune=False)
