"""The folder source's walk of an image tree: recursive, sorted, symlinks followed without loops, hidden entries
skipped.

Files are chosen by extension only (``IMAGE_EXTENSIONS``, any case); their content decides later whether they are
images (``extractor.images.decode``). Other files are ignored, not errors.

Relative paths are stored as UTF-8 (Parquet strings): a name whose bytes are not UTF-8 (a Latin-1 name copied
from an old disk) keeps its real path for reading, and is stored with those bytes written as ``\\xNN``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from extractor.errors import AlexfeatError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".avif"})


@dataclass(frozen=True)
class FileEntry:
    """One image to embed, from any input source (``extractor.images.sources``): its relative key, where its bytes
    are, its size and a change token.

    ``abs_path`` is a local path or a URL (``s3://bucket/key``); ``offset`` None means the whole file or object,
    an int that the entry is ``size`` bytes from that offset of it (a member of a tar shard). ``mtime_ns`` is the
    change token: the file's mtime, or one derived from an object's ETag and time (see ``change_token``).
    """

    path: str  # relative to the root, '/'-separated, UTF-8 (see ``stored_name``): the id derives from it
    abs_path: str
    size: int
    mtime_ns: int
    label: str | None = None
    offset: int | None = None


OnError = Callable[[str, OSError], None]


def discover(
    root: str | os.PathLike[str], on_error: OnError | None = None, follow_outside: bool = True
) -> Iterator[FileEntry]:
    """The image files under ``root`` as a lazy iterator, sorted by relative path (code-point order).

    Symbolic links to files and folders are followed; each real folder is walked once (tracked by device and
    inode), so a link back to an ancestor never loops and a folder reachable twice is listed once, under the path
    met first in sorted order. With ``follow_outside=False`` a link whose target lies outside ``root`` (its real
    path) is skipped. Names starting with '.' are skipped; so are broken links, link loops and anything that is
    not a regular file (FIFOs, devices, sockets: never opened). Size and mtime are those of the link target. A
    sub-folder that cannot be listed or a file that cannot be stat'ed is skipped and passed to
    ``on_error(relative_path, exception)`` when given. A missing or unreadable root raises ``AlexfeatError`` at
    once, before iteration starts.
    """
    root_abs = os.path.abspath(os.fspath(root))
    if not os.path.exists(root_abs):
        raise AlexfeatError(f"image folder {os.fspath(root)!r} does not exist")
    if not os.path.isdir(root_abs):
        raise AlexfeatError(f"{os.fspath(root)!r} is not a folder: give the folder that holds the images")
    inside = None if follow_outside else os.path.realpath(root_abs)
    try:
        root_stat = os.stat(root_abs)
        root_children = _list_dir(root_abs, "", inside)
    except OSError as exc:
        raise AlexfeatError(f"cannot read image folder {os.fspath(root)!r}: {exc.strerror or exc}") from exc
    return _walk(root_children, {(root_stat.st_dev, root_stat.st_ino)}, on_error, inside)


def _walk(
    root_children: list[tuple[str, str, bool]],
    visited: set[tuple[int, int]],
    on_error: OnError | None,
    inside: str | None,
) -> Iterator[FileEntry]:
    """Depth-first walk below the root's listed children, skipping real folders already in ``visited``."""
    # A stack of (relative path, absolute path, is_dir), pushed in reverse order so items pop in sorted order.
    stack = root_children[::-1]
    while stack:
        rel, abs_path, is_dir = stack.pop()
        try:
            st = os.stat(abs_path)
        except OSError as exc:
            if on_error is not None:
                on_error(rel, exc)
            continue
        if not is_dir:
            yield FileEntry(rel, abs_path, st.st_size, st.st_mtime_ns, label_of(rel))
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            continue
        visited.add(key)
        try:
            children = _list_dir(abs_path, rel + "/", inside)
        except OSError as exc:
            if on_error is not None:
                on_error(rel, exc)
            continue
        stack.extend(reversed(children))


def _list_dir(abs_dir: str, rel_prefix: str, inside: str | None = None) -> list[tuple[str, str, bool]]:
    """Visible sub-folders and image files of one folder, sorted so that a depth-first walk yields paths in
    code-point order (a folder sorts as ``name + '/'``, which is where its contents fall among its siblings).
    With ``inside`` (a real path), links whose target is not under it are left out."""
    children: list[tuple[str, str, str, bool]] = []
    with os.scandir(abs_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            stored = stored_name(name)
            if inside is not None and entry.is_symlink() and not _is_under(os.path.realpath(entry.path), inside):
                log.info("skipping %s: the link leads outside the folder (--no-follow-outside)", entry.path)
                continue
            try:
                if entry.is_dir():  # follows links; False for broken links
                    children.append((stored + "/", rel_prefix + stored, entry.path, True))
                elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    children.append((stored, rel_prefix + stored, entry.path, False))
            except OSError:
                continue  # cannot even tell what it is: treat like a broken link
    children.sort()
    unique: list[tuple[str, str, str, bool]] = []
    for child in children:
        if unique and child[0] == unique[-1][0]:  # a literal backslash-escape name beside the undecodable one
            log.warning("skipping %r: its name is stored as %r, like %r's", child[2], child[1], unique[-1][2])
            continue
        unique.append(child)
    return [(rel, abs_path, is_dir) for _, rel, abs_path, is_dir in unique]


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def stored_name(name: str) -> str:
    """``name`` as the dataset stores it (UTF-8): unchanged, or, when the file system's bytes are not UTF-8
    (Python holds them as surrogate escapes), with each such byte written as ``\\xNN``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def label_of(rel_path: str) -> str | None:
    """The class label of a relative path: its first folder under the root, None for files directly in the root."""
    head, sep, _ = rel_path.partition("/")
    return head if sep else None
