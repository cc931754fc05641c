"""The object-store source: the images under a prefix of ``s3://``, ``gs://``, ``az://``... through fsspec.

Keys are relative to the prefix, exactly as paths are relative to a folder, so a bucket and its local mirror give
the same ids (and the same labels: the first "folder" of the key). One listing gives every object's size and
change token (:func:`~extractor.images.sources.base.change_token`), so a rerun downloads nothing unchanged.
Credentials and endpoints come from the environment and configuration files, as the store's own SDK reads them
(S3: ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``..., ``~/.aws/config``, and ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` for an S3-compatible server); the URL recorded as the dataset's root carries none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from extractor.errors import AlexfeatError
from extractor.images.discover import FileEntry, label_of
from extractor.images.sources.base import OnError, change_token, filesystem, is_image_key, public_url


@dataclass(frozen=True)
class ObjectStoreSource:
    """Every image object under the prefix ``url`` (``s3://bucket/prefix``)."""

    url: str
    root: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", public_url(self.url).rstrip("/"))

    def list(self, on_error: OnError | None = None) -> Iterator[FileEntry]:
        fs, prefix = filesystem(self.url)
        prefix = prefix.rstrip("/")
        try:
            found: dict[str, dict[str, Any]] = fs.find(prefix, detail=True)
        except (FileNotFoundError, PermissionError) as exc:
            raise AlexfeatError(f"cannot list {self.root}: {exc}; check the URL and your credentials") from None
        except Exception as exc:  # the SDK's own errors: no credentials, endpoint unreachable
            raise AlexfeatError(
                f"cannot list {self.root} ({type(exc).__name__}: {exc}); credentials and endpoint come from the "
                "environment (S3: AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
            ) from None
        if not found and not fs.isdir(prefix):
            raise AlexfeatError(f"no objects under {self.root}: check the bucket and prefix")
        scheme = self.url.split("://", 1)[0]
        entries = []
        for name, info in found.items():
            key = name[len(prefix) + 1 :] if name.startswith(prefix + "/") else ""
            if key and info.get("type", "file") == "file" and is_image_key(key):
                size = int(info.get("size") or 0)
                entries.append(FileEntry(key, f"{scheme}://{name}", size, change_token(info), label_of(key)))
        entries.sort(key=lambda e: e.path)
        return iter(entries)
