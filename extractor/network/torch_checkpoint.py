"""Read PyTorch ``.pth`` state dicts into NumPy arrays without importing torch.

Both formats ``torch.save`` has written are supported: the zip format (torch >= 1.6; any top folder name) and
the legacy format (a sequence of pickles followed by the raw storages). Each tensor honours its dtype, size,
stride and storage offset. The unpickler is restricted: it only builds tensors, ordered dicts and torch sizes;
a checkpoint that asks for anything else (for example ``os.system``) is refused before anything runs.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extractor.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype ("bfloat16" is converted to float32 after reading)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


MAX_TENSOR_VALUES = 1 << 28  # the largest AlexNet tensor (fc6) holds 37,748,736


@dataclass(frozen=True)
class StorageType:
    """Stand-in for a ``torch.*Storage`` class named in a pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        code = STORAGE_DTYPES[self.name]
        return np.dtype("<u2") if code == "bfloat16" else np.dtype(code)


@dataclass
class StorageRef:
    """A storage referenced by a pickle; ``data`` is filled in once its bytes are read."""

    kind: StorageType
    key: str
    numel: int
    data: np.ndarray | None = None


@dataclass
class LazyTensor:
    """A tensor view (storage, offset, size, stride) materialised after all storages are read."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise WeightsError(f"storage {self.storage.key!r} is missing from the checkpoint")
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.stride + self.size) or self.offset < 0:
            raise WeightsError("checkpoint has a tensor with an invalid size/stride")
        if math.prod(self.size) > MAX_TENSOR_VALUES:  # a stride-0 view may repeat a small storage: cap the copy
            raise WeightsError(
                f"a tensor of storage {self.storage.key!r} claims {math.prod(self.size):,} values, more than any "
                "AlexNet layer holds: the checkpoint is corrupt or not AlexNet weights"
            )
        if 0 not in self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= data.size:
                raise WeightsError(
                    f"a tensor of storage {self.storage.key!r} reaches past its end: "
                    "the checkpoint is truncated or corrupt"
                )
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride], writeable=False
        )
        out = np.array(view)  # own, contiguous copy
        if self.storage.kind.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor(
    storage: StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> LazyTensor:
    if not isinstance(storage, StorageRef):
        raise WeightsError("checkpoint builds a tensor from something that is not a storage")
    return LazyTensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: LazyTensor, *_: Any) -> LazyTensor:
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    return OrderedDict(*args)


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-building names; storages come back as :class:`StorageRef`."""

    def __init__(self, file: io.BufferedIOBase, persistent_load: Callable[[Any], Any]) -> None:
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(
                f"refusing to load checkpoint: its pickle asks for {module}.{name}, which a weights file "
                "never needs (only tensors and dicts are allowed); the file may be malicious"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent(pid)


def _storage_from_pid(pid: Any, storages: dict[str, StorageRef]) -> StorageRef:
    """Map a persistent id ``('storage', type, key, location, numel[, view])`` to a shared StorageRef."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise WeightsError(f"checkpoint has an unsupported persistent id {str(pid)[:80]!r}")
    kind, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(kind, StorageType):
        raise WeightsError("checkpoint names a storage type that is not a torch storage")
    if len(pid) > 5 and pid[5] is not None:
        raise WeightsError("checkpoint uses legacy storage views, which are not supported")
    if key not in storages:
        storages[key] = StorageRef(kind, key, numel)
    return storages[key]


def _unpickle(data: bytes | io.BufferedIOBase, storages: dict[str, StorageRef]) -> Any:
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return RestrictedUnpickler(file, lambda pid: _storage_from_pid(pid, storages)).load()
    except WeightsError:
        raise
    except Exception as exc:  # EOFError, UnpicklingError, ... on damaged files
        raise WeightsError(f"checkpoint pickle is damaged or truncated ({type(exc).__name__}: {exc})") from None


def _read_zip(path: Path) -> tuple[Any, dict[str, StorageRef]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{path}: not a valid torch zip checkpoint ({exc}); the file may be truncated") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: zip has no single top-level '<folder>/data.pkl': not a torch checkpoint")
        top = pickles[0].split("/")[0]
        byteorder = "little"
        if f"{top}/byteorder" in names:
            byteorder = archive.read(f"{top}/byteorder").decode().strip()
        storages: dict[str, StorageRef] = {}
        try:
            obj = _unpickle(archive.read(pickles[0]), storages)
            file_size = path.stat().st_size
            for ref in storages.values():
                entry = archive.getinfo(f"{top}/data/{ref.key}")
                if entry.file_size > 4 * file_size:  # checked before reading: weights barely compress
                    raise WeightsError(
                        f"{path}: storage {ref.key!r} claims {entry.file_size:,} bytes unpacked from a "
                        f"{file_size:,}-byte file: the checkpoint is corrupt or hostile"
                    )
                raw = archive.read(entry)
                ref.data = _storage_array(raw, ref, byteorder, path)
        except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
            raise WeightsError(f"{path}: checkpoint is truncated or corrupt ({exc})") from None
    return obj, storages


def _storage_array(raw: bytes, ref: StorageRef, byteorder: str, path: Path) -> np.ndarray:
    dtype = ref.kind.dtype
    if len(raw) < ref.numel * dtype.itemsize:
        raise WeightsError(f"{path}: storage {ref.key!r} is shorter than declared: the checkpoint is truncated")
    arr = np.frombuffer(raw, dtype=dtype, count=ref.numel)
    if byteorder == "big" and dtype.itemsize > 1:
        arr = arr.byteswap()
    return arr


def _read_legacy(path: Path) -> tuple[Any, dict[str, StorageRef]]:
    storages: dict[str, StorageRef] = {}
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        magic = _unpickle(fh, storages)
        if magic != LEGACY_MAGIC:
            raise WeightsError(f"{path}: not a torch checkpoint (no zip archive, no legacy magic number)")
        _unpickle(fh, storages)  # protocol version
        _unpickle(fh, storages)  # sys info
        obj = _unpickle(fh, storages)
        keys = _unpickle(fh, storages)
        for key in keys:
            ref = storages.get(str(key))
            if ref is None:
                raise WeightsError(f"{path}: storage {key!r} is listed but never used: the file is corrupt")
            header = fh.read(8)
            if len(header) < 8:
                raise WeightsError(f"{path}: checkpoint is truncated (storage {key!r} missing)")
            (numel,) = struct.unpack("<q", header)
            nbytes = numel * ref.kind.dtype.itemsize
            if numel < 0 or nbytes > file_size - fh.tell():  # checked before reading: never allocate a lie
                raise WeightsError(
                    f"{path}: storage {key!r} declares {numel:,} values, more than the file holds: the checkpoint "
                    "is truncated or corrupt"
                )
            raw = fh.read(nbytes)
            if numel != ref.numel or len(raw) < nbytes:
                raise WeightsError(f"{path}: checkpoint is truncated or corrupt (storage {key!r})")
            ref.data = _storage_array(raw, ref, "little", path)
    return obj, storages


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch checkpoint holding a state dict (possibly under a ``"state_dict"`` key) as NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: checkpoint file is empty")
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
    elif _head(path, 4) == b"PK\x03\x04":
        raise WeightsError(f"{path}: zip checkpoint without its central directory: the file is truncated")
    else:
        obj, _ = _read_legacy(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if isinstance(value, LazyTensor):
            out[str(name)] = value.to_numpy()
    if not out:
        raise WeightsError(f"{path}: checkpoint holds no tensors")
    return out
