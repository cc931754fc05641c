"""The tar-shard source: each image member of WebDataset-style ``.tar`` shards is an entry, never extracted.

Shards are given as a pattern (``shards/{00000..00099}.tar``, ``shards/*.tar``, also under a URL prefix) or as a
folder whose top level holds ``.tar`` files. The listing walks each shard's member headers (a local shard is read
header by header, seeking over the data); decoding then reads each member's bytes once, as a byte range of the
shard, in shard order. A member's stored key is ``<shard>/<member name>`` with the shard relative to the shards'
folder (the dataset's root); its label is the text of the ``.cls`` (else ``.txt``) member with the same
WebDataset key (the member name up to the first dot of its base name), else none. The change token of every
member is the shard's (its mtime, or its object's token): a rewritten shard has its same-size members hashed
again, and only those whose bytes changed are embedded again.

A shard that ends early (a copy cut short) keeps the members before the cut; the member that is cut fails as
``truncated`` and the shard itself is recorded as ``truncated`` for the rest of it (without a size: while the
shard stays cut, every run records it again). A file that is not a tar at all is recorded as ``corrupt``.
"""

from __future__ import annotations

import glob
import itertools
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Any

from extractor.errors import AlexfeatError
from extractor.images.discover import FileEntry, stored_name
from extractor.images.sources.base import OnError, SourceError, change_token, filesystem, is_image_key, is_url

LABEL_EXTENSIONS = ("cls", "txt")
"""Members that hold a sample's label, by preference."""

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_WILD = re.compile(r"[*?\[{]")


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: ``{00000..00099}`` (zero-padded to the first bound's width when it has a
    leading zero) and ``{a,b,c}``; several braces give their product, in order."""
    choices: list[list[str]] = []
    for body in _BRACE.findall(pattern):
        bounds = _RANGE.match(body)
        if bounds:
            low, high = bounds.groups()
            width = len(low) if low.startswith("0") and len(low) > 1 else 0
            step = 1 if int(high) >= int(low) else -1
            choices.append([str(n).zfill(width) for n in range(int(low), int(high) + step, step)])
        else:
            choices.append(body.split(","))
    pieces = _BRACE.split(pattern)[::2]
    return ["".join(itertools.chain(*zip(pieces, combo), [pieces[-1]])) for combo in itertools.product(*choices)]


def is_shard_pattern(spec: str) -> bool:
    """Whether an embed input names tar shards: a ``.tar`` path, URL or pattern."""
    return spec.rstrip("/").lower().endswith(".tar") or bool(_BRACE.search(spec))


def is_shard_folder(folder: str) -> bool:
    """Whether a local folder is a folder of shards: ``.tar`` files at its top level, no folders or images."""
    try:
        names = [name for name in os.listdir(folder) if not name.startswith(".")]
    except OSError:
        return False
    tars = [name for name in names if name.lower().endswith(".tar")]
    others = [
        name for name in names if name not in tars and (is_image_key(name) or os.path.isdir(os.path.join(folder, name)))
    ]
    return bool(tars) and not others


@dataclass(frozen=True)
class TarShardSource:
    """The image members of the shards that ``pattern`` names (see the module's docstring)."""

    pattern: str
    root: str = field(init=False)

    def __post_init__(self) -> None:
        spec = self.pattern
        if not is_url(spec):
            spec = os.path.abspath(spec)
            if os.path.isdir(spec):
                spec = os.path.join(spec, "*.tar")
        object.__setattr__(self, "pattern", spec)
        parts = spec.split("/")
        static = next(i for i, part in enumerate(parts + ["*"]) if _WILD.search(part) or i == len(parts) - 1)
        object.__setattr__(self, "root", "/".join(parts[:static]) or "/")
        if not self.shards():
            raise AlexfeatError(f"no tar shards match {self.pattern}")

    def shards(self) -> list[str]:
        """The shards' locations, in order (a brace pattern: as expanded, existing or not; a glob: sorted)."""
        expanded = expand_braces(self.pattern)
        if not any(re.search(r"[*?\[]", p) for p in expanded):
            return expanded
        found: list[str] = []
        for pattern in expanded:
            if is_url(pattern):
                fs, path = filesystem(pattern)
                scheme = pattern.split("://", 1)[0]
                found += [f"{scheme}://{p}" for p in sorted(fs.glob(path))]
            else:
                found += sorted(glob.glob(pattern))
        return found

    def key(self, shard: str) -> str:
        return stored_name(shard[len(self.root) :].lstrip("/"))

    def list(self, on_error: OnError | None = None) -> Iterator[FileEntry]:
        for shard in self.shards():
            key = self.key(shard)
            try:
                yield from self._members(shard, key, on_error)
            except SourceError as exc:
                if on_error is not None:
                    on_error(key, exc)

    def _members(self, shard: str, key: str, on_error: OnError | None) -> Iterator[FileEntry]:
        size, token = _stat(shard)
        images: list[tuple[tarfile.TarInfo, str]] = []
        labels: dict[str, dict[str, str]] = {}
        with _open(shard) as fh:
            for member, error in scan_members(fh, size):
                if member is None:
                    if on_error is not None and error is not None:
                        on_error(key, error)
                    break
                name = stored_name(member.name)
                sample, _, ext = _sample_key(name)
                if ext in LABEL_EXTENSIONS:
                    labels.setdefault(sample, {})[ext] = _label_text(fh, member)
                elif is_image_key(name):
                    images.append((member, name))
        for member, name in images:
            found = labels.get(_sample_key(name)[0], {})
            label = next((found[ext] for ext in LABEL_EXTENSIONS if found.get(ext)), None)
            yield FileEntry(f"{key}/{name}", shard, member.size, token, label, member.offset_data)


def scan_members(fh: IO[bytes], size: int) -> Iterator[tuple[tarfile.TarInfo | None, SourceError | None]]:
    """The file members of an open tar, header by header, then ``(None, error)`` if it ends early or is not a tar
    (raised as ``SourceError`` when nothing of it can be read)."""
    try:
        archive = tarfile.open(fileobj=fh, mode="r:")
    except tarfile.ReadError as exc:
        raise SourceError("corrupt", f"not a tar file ({exc})") from None
    last = None
    try:
        while (member := archive.next()) is not None:
            last = member.name
            if member.isfile():
                yield member, None
    except (tarfile.ReadError, OSError) as exc:
        yield None, _cut(last, str(exc))
        return
    fh.seek(archive.offset)
    if fh.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):  # no end-of-archive block: it was cut
        yield None, _cut(last, f"it ends at byte {size} without the end-of-archive block")


def _cut(last: str | None, detail: str) -> SourceError:
    after = f"after member {stored_name(last)!r}" if last else "at its start"
    return SourceError("truncated", f"the tar is cut short {after} ({detail}): the rest of the shard cannot be read")


def read_members(shard: str, names: set[str]) -> dict[str, bytes]:
    """The bytes of the members of ``shard`` stored as ``names`` (one pass over its headers); those not found, or
    not readable, are absent."""
    found: dict[str, bytes] = {}
    size, _ = _stat(shard)
    with _open(shard) as fh:
        for member, _ in scan_members(fh, size):
            if member is None:
                break
            name = stored_name(member.name)
            if name in names:
                fh.seek(member.offset_data)
                data = fh.read(member.size)
                if len(data) == member.size:
                    found[name] = data
                if len(found) == len(names):
                    break
    return found


def _sample_key(name: str) -> tuple[str, str, str]:
    """WebDataset's (sample key, '.', extension) of a member name: split at the first dot of its base name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), dot, ext.lower()


def _label_text(fh: IO[bytes], member: tarfile.TarInfo) -> str:
    position = fh.tell()
    fh.seek(member.offset_data)
    text = fh.read(min(member.size, 4096)).decode("utf-8", "replace").strip()
    fh.seek(position)
    return text.splitlines()[0].strip() if text else ""


def _stat(shard: str) -> tuple[int, int]:
    """(size, change token) of a shard; SourceError ``missing`` when it does not exist."""
    try:
        if is_url(shard):
            fs, path = filesystem(shard)
            info: dict[str, Any] = fs.info(path)
            return int(info.get("size") or 0), change_token(info)
        st = os.stat(shard)
        return st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        raise SourceError("missing", f"the shard {shard} does not exist") from None
    except OSError as exc:
        raise SourceError("unreadable", f"cannot read the shard: {exc.strerror or exc}") from None


def _open(shard: str) -> closing[Any]:
    try:
        if is_url(shard):
            fs, path = filesystem(shard)
            return closing(fs.open(path, "rb"))
        return closing(open(shard, "rb"))
    except OSError as exc:
        raise SourceError("unreadable", f"cannot read the shard: {exc.strerror or exc}") from None


def shard_of_key(root: str, key: str) -> tuple[str, str] | None:
    """(shard location, member name) of a stored key whose leading components name a ``.tar`` file under
    ``root``, else None."""
    parts = key.split("/")
    for i in range(1, len(parts)):
        if parts[i - 1].lower().endswith(".tar"):
            shard = posixpath.join(root, *parts[:i]) if is_url(root) else os.path.join(root, *parts[:i])
            if is_url(shard) or os.path.isfile(shard):
                return shard, "/".join(parts[i:])
    return None
