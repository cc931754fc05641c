"""Input sources of the embed job: where the images are, listed as entries and read as bytes.

- :class:`FolderSource`: a local folder (``discover``'s walk);
- :class:`ManifestSource`: the paths or URLs a text, CSV or Parquet file lists (``--from-list``);
- :class:`ObjectStoreSource`: a prefix in an object store (``s3://``, ``gs://``, ``az://``) through fsspec;
- :class:`TarShardSource`: the image members of WebDataset-style tar shards.

:func:`open_source` picks one from what the user gave; :func:`read_entries` reads the entries of any of them.
:func:`read_stored` reads images back by their stored keys and the dataset's recorded root (thumbnails).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from extractor.errors import AlexfeatError
from extractor.images.sources.base import (
    OnError,
    Source,
    SourceError,
    change_token,
    entry_sha256,
    is_url,
    join_key,
    public_url,
    read_entries,
    read_entry,
)
from extractor.images.sources.folder import FolderSource
from extractor.images.sources.manifest import ManifestSource
from extractor.images.sources.objectstore import ObjectStoreSource
from extractor.images.sources.tarshards import (
    TarShardSource,
    expand_braces,
    is_shard_folder,
    is_shard_pattern,
    read_members,
    shard_of_key,
)

__all__ = [
    "FolderSource",
    "ManifestSource",
    "ObjectStoreSource",
    "OnError",
    "Source",
    "SourceError",
    "TarShardSource",
    "change_token",
    "entry_sha256",
    "expand_braces",
    "is_url",
    "open_source",
    "public_url",
    "read_entries",
    "read_entry",
    "read_stored",
]


def open_source(
    spec: str | os.PathLike[str] | None = None,
    from_list: str | None = None,
    root: str | None = None,
    follow_outside: bool = True,
) -> Source:
    """The source an embed input names: ``from_list`` (a manifest; relative paths under ``root``), tar shards (a
    ``.tar`` path, URL or pattern such as ``shards/{00000..00099}.tar``, or a folder of ``.tar`` files), an
    object-store prefix (``s3://bucket/prefix``) or a folder (``follow_outside``: see ``FolderSource``). Raises
    AlexfeatError when it does not exist."""
    if from_list is not None:
        if spec is not None:
            raise AlexfeatError("give either an input (folder, URL or shards) or --from-list, not both")
        return ManifestSource(from_list, root)
    if root is not None:
        raise AlexfeatError("--root applies to --from-list only")
    if spec is None:
        raise AlexfeatError("give an input: a folder, an s3:// (gs://, az://) URL, tar shards or --from-list FILE")
    text = os.fspath(spec)
    if is_shard_pattern(text) or (not is_url(text) and is_shard_folder(text)):
        return TarShardSource(text)
    if is_url(text):
        return ObjectStoreSource(text)
    return FolderSource(text, follow_outside)


def read_stored(root: str | os.PathLike[str], keys: Sequence[str]) -> list[bytes | OSError]:
    """The bytes of the images stored under ``keys`` in a dataset whose metadata records ``root``, in order, or
    the error of each that cannot be read now (gone, or the store unreachable): the inverse of every source's
    keys. Members of tar shards are read in one pass over each shard."""
    from extractor.images.discover import FileEntry

    root = os.fspath(root)
    out: list[bytes | OSError | None] = [None] * len(keys)
    plain: list[tuple[int, FileEntry]] = []
    members: dict[str, dict[str, int]] = {}
    for i, key in enumerate(keys):
        member = None if is_url(key) or os.path.isabs(key) else shard_of_key(root, key)
        if member is None:
            plain.append((i, FileEntry(key, join_key(root, key), 0, 0)))
        else:
            members.setdefault(member[0], {})[member[1]] = i
    for (i, _), data in zip(plain, read_entries([entry for _, entry in plain])):
        out[i] = data
    for shard, names in members.items():
        try:
            found = read_members(shard, set(names))
        except (OSError, AlexfeatError) as exc:
            found, failure = {}, OSError(str(exc))
        else:
            failure = SourceError("missing", "not in the shard now")
        for name, i in names.items():
            out[i] = found.get(name, failure)
    return [r if r is not None else OSError("not read") for r in out]
