"""extractor.images.discover: the image walk (order, extensions, hidden entries, symlinks, errors) and labels."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from PIL import Image

from extractor.errors import AlexfeatError
from extractor.images.decode import DecodeError, ResizeSpec, decode_image
from extractor.images.discover import FileEntry, discover, label_of
from tests import imagefiles as files


def _paths(root: Path) -> list[str]:
    return [entry.path for entry in discover(root)]


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_awkward_tree_lists_exactly_its_candidates_and_each_decodes_as_expected(tmp_path: Path) -> None:
    tree = files.make_awkward_tree(tmp_path / "images")
    entries = list(discover(tree.root))
    assert [e.path for e in entries] == tree.listed
    spec = ResizeSpec.parse("squash256-center227")
    kinds = {}
    for entry in entries:
        try:
            assert decode_image(entry.abs_path, spec).pixels.shape == (227, 227, 3)
        except DecodeError as error:
            kinds[entry.path] = error.kind
    assert kinds == tree.errors


def test_entries_carry_size_and_mtime_of_the_file(tmp_path: Path) -> None:
    photo = files.make_photo(tmp_path / "cats" / "a.jpg", (64, 48))
    os.utime(photo, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (entry,) = discover(tmp_path)
    assert entry == FileEntry("cats/a.jpg", str(photo), photo.stat().st_size, 1_600_000_000_123_456_789, "cats")


def test_order_is_code_point_order_of_the_whole_relative_path(tmp_path: Path) -> None:
    # 'a b/' sorts before 'a/' (space < slash) and 'a.jpg' before 'a/' ('.' < '/'): a per-folder name sort
    # would get these wrong.
    rels = ["a/x.jpg", "a b/x.jpg", "a.jpg", "B.jpg", "b.jpg", "é/z.png", "z/y/x.png", "a/b/c.gif", "Ä.webp"]
    _touch(tmp_path, *rels)
    assert _paths(tmp_path) == sorted(rels)


def test_extensions_are_case_insensitive_and_other_files_are_ignored(tmp_path: Path) -> None:
    images = ["a.JPG", "b.Jpeg", "c.png", "d.GIF", "e.bmp", "f.tif", "g.TIFF", "h.webp", "i.AVIF"]
    others = ["notes.txt", "a.jpg.bak", "raw.heic", "noextension", "archive.zip", "jpg"]
    _touch(tmp_path, *images, *others)
    assert _paths(tmp_path) == sorted(images)


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "seen.jpg", ".hidden.jpg", ".cache/x.jpg", "cats/.thumb.jpg", "cats/.git/y.png", "cats/ok.png")
    assert _paths(tmp_path) == ["cats/ok.png", "seen.jpg"]


def test_a_hidden_root_itself_is_walked(tmp_path: Path) -> None:
    _touch(tmp_path / ".data", "a.jpg")
    assert _paths(tmp_path / ".data") == ["a.jpg"]


def test_unicode_and_spaces_in_names(tmp_path: Path) -> None:
    rels = ["chats été/photo 1.jpg", "猫/写真.png", "emoji 😀/ok.jpeg"]
    _touch(tmp_path, *rels)
    entries = list(discover(tmp_path))
    assert [e.path for e in entries] == sorted(rels)
    assert all(Path(e.abs_path).is_file() for e in entries)


def _make_bytes_name(folder: Path, name: bytes) -> str:
    """Create a file whose name is raw bytes; skip where the file system insists on UTF-8 names."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(files.raw_name(folder, name), "wb") as fh:
            fh.write(b"x")
    except (OSError, ValueError) as exc:
        pytest.skip(f"this file system refuses non-UTF-8 names: {exc}")
    return os.fsdecode(name)


@pytest.mark.skipif(os.name != "posix", reason="names as raw bytes are a POSIX thing")
def test_names_that_are_not_utf8_are_stored_escaped_and_still_read(tmp_path: Path) -> None:
    _make_bytes_name(tmp_path, b"caf\xe9.jpg")  # Latin-1, as copied from an old disk
    _make_bytes_name(tmp_path / os.fsdecode(b"\xc9t\xe9"), b"x.jpg")
    entries = list(discover(tmp_path))
    assert [e.path for e in entries] == ["\\xc9t\\xe9/x.jpg", "caf\\xe9.jpg"]  # code-point order, as stored
    assert all(e.path.encode("utf-8") for e in entries)  # storable as Parquet strings
    assert all(Path(e.abs_path).read_bytes() == b"x" for e in entries)  # the real file behind each
    assert label_of(entries[0].path) == "\\xc9t\\xe9"


@pytest.mark.skipif(os.name != "posix", reason="names as raw bytes are a POSIX thing")
def test_a_name_spelling_the_escape_of_another_is_listed_once(tmp_path: Path, caplog) -> None:
    _make_bytes_name(tmp_path, b"caf\xe9.jpg")
    _touch(tmp_path, "caf\\xe9.jpg")  # literally a backslash, x, e, 9
    entries = list(discover(tmp_path))
    assert [e.path for e in entries] == ["caf\\xe9.jpg"]  # never two rows with one path (and one id)
    assert "stored as" in caplog.text


def test_symlink_loops_terminate_and_list_each_file_once(tmp_path: Path) -> None:
    _touch(tmp_path, "a/x.jpg", "a/b/y.jpg")
    os.symlink("..", tmp_path / "a" / "b" / "up")  # back to a/
    os.symlink(".", tmp_path / "a" / "self")
    os.symlink(str(tmp_path), tmp_path / "a" / "root")  # absolute link to the root
    first_100 = itertools.islice(discover(tmp_path), 100)  # a looping walk fails here instead of hanging
    assert [entry.path for entry in first_100] == ["a/b/y.jpg", "a/x.jpg"]


def test_symlinked_folder_and_file_are_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    photo = files.make_photo(outside / "p.jpg", (64, 48))
    root = tmp_path / "root"
    _touch(root, "own.jpg")
    os.symlink(outside, root / "linked")
    os.symlink(photo, root / "link.jpg")
    entries = {e.path: e for e in discover(root)}
    assert sorted(entries) == ["link.jpg", "linked/p.jpg", "own.jpg"]
    assert entries["link.jpg"].size == entries["linked/p.jpg"].size == photo.stat().st_size  # the target's size


def test_folder_reachable_twice_is_listed_once_under_the_first_path(tmp_path: Path) -> None:
    _touch(tmp_path / "outside", "p.jpg")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "outside", root / "b")
    os.symlink(tmp_path / "outside", root / "a")
    assert _paths(root) == ["a/p.jpg"]


def test_broken_symlink_is_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "missing", tmp_path / "broken_dir")
    assert _paths(tmp_path) == ["ok.jpg"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unreadable_subfolder_is_skipped_and_reported(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg", "locked/x.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        reported: list[str] = []
        assert [e.path for e in discover(tmp_path, on_error=lambda rel, exc: reported.append(rel))] == ["ok.jpg"]
        assert reported == ["locked"]
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AlexfeatError, match="does not exist"):
        discover(tmp_path / "nope")  # at once, not when the first entry is asked for


def test_root_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    with pytest.raises(AlexfeatError, match="not a folder"):
        discover(tmp_path / "a.jpg")


@pytest.mark.parametrize(
    ("rel", "label"),
    [("cats/a.jpg", "cats"), ("Cats Big/sub/a.jpg", "Cats Big"), ("a.jpg", None), ("猫/a.png", "猫")],
)
def test_label_is_the_first_folder_under_the_root(rel: str, label: str | None) -> None:
    assert label_of(rel) == label


def test_links_leaving_the_folder_are_skipped_when_not_to_be_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    photo = files.make_photo(outside / "p.jpg", (64, 48))
    root = tmp_path / "root"
    _touch(root, "own.jpg", "sub/in.jpg")
    os.symlink(outside, root / "linked")  # a folder outside
    os.symlink(photo, root / "link.jpg")  # a file outside
    os.symlink("sub", root / "inner")  # a folder inside: always followed (sub/ is then listed under inner/)
    os.symlink("../own.jpg", root / "sub" / "again.jpg")  # a file inside
    assert _paths(root) == ["inner/again.jpg", "inner/in.jpg", "link.jpg", "linked/p.jpg", "own.jpg"]
    kept = [e.path for e in discover(root, follow_outside=False)]
    assert kept == ["inner/again.jpg", "inner/in.jpg", "own.jpg"]


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero are POSIX things")
def test_links_to_special_files_and_link_loops_never_hang(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg")
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", tmp_path / "fifo.jpg")  # opening a FIFO would block forever
    os.symlink("/dev/zero", tmp_path / "zero.jpg")  # reading it would never end
    os.symlink("self.jpg", tmp_path / "self.jpg")
    os.symlink("b.jpg", tmp_path / "a.jpg")
    os.symlink("a.jpg", tmp_path / "b.jpg")
    for follow in (True, False):
        assert [e.path for e in discover(tmp_path, follow_outside=follow)] == ["ok.jpg"]


def test_an_avif_photo_is_listed_and_decodes(tmp_path: Path) -> None:
    pytest.importorskip("PIL.AvifImagePlugin", reason="this Pillow build cannot write AVIF")
    Image.new("RGB", (64, 48), (200, 30, 90)).save(tmp_path / "red.avif")
    assert _paths(tmp_path) == ["red.avif"]
    assert decode_image(tmp_path / "red.avif", ResizeSpec.parse("squash227")).pixels.shape == (227, 227, 3)
