"""A GGUF metadata reader: the header, key/values and tensor table, never the tensor data.

The `gguf` package (the one llama.cpp publishes) supplies the type tables; its own
`GGUFReader` decodes every tokenizer string into a numpy array and takes seconds on a
large vocabulary, so the header is walked here with `struct` over a memory map: a
multi-GB file costs only the pages the header spans.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this (tokenizer vocabularies, merges, scores) are summarised, not kept.
_KEEP_ARRAY_MAX = 4096

Scalar = int | float | bool | str
Value = Scalar | tuple[Scalar, ...]


class GgufError(Exception):
    """The file is missing, unreadable, not a GGUF, or truncated; the text says which."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: its name, ggml type, shape (ne[0] first) and size in bytes."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        """Number of values in the tensor."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class ArraySummary:
    """A long array kept only as its length and the bytes its strings take."""

    count: int
    string_bytes: int = 0


@dataclass(frozen=True)
class GgufFile:
    """Everything in a GGUF header: metadata key/values and the tensor table."""

    path: str
    file_bytes: int
    version: int
    metadata: Mapping[str, Value]
    arrays: Mapping[str, ArraySummary]  # long arrays, summarised
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        """`general.architecture`, '' when absent."""
        value = self.metadata.get("general.architecture", "")
        return value if isinstance(value, str) else ""

    def arch_value(self, key: str, default: Value | None = None) -> Value | None:
        """The value of `{arch}.key`, or `default`."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensor data."""
        return sum(tensor.nbytes for tensor in self.tensors)


def _type_tables() -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    names = {int(kind): kind.name for kind in GGMLQuantizationType}
    sizes = {int(kind): size for kind, size in GGML_QUANT_SIZES.items()}
    return names, sizes


_TABLES: tuple[dict[int, str], dict[int, tuple[int, int]]] | None = None

# GGUF value type ids (gguf.constants.GGUFValueType): fixed by the format.
_FIXED = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


def read_gguf(path: str | os.PathLike[str], *, whole_size: int | None = None) -> GgufFile:
    """Read the header of the GGUF file at `path` (blocking); raises GgufError.

    `whole_size`: `path` is only the first part of a GGUF of that many bytes (a model shipped
    in chunks), holding at least the header.
    """
    global _TABLES
    if _TABLES is None:
        _TABLES = _type_tables()
    type_names, type_sizes = _TABLES
    where = Path(path)
    try:
        with where.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise GgufError(f"{where} is not a GGUF file (only {size} bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _parse(view, str(where), size, type_names, type_sizes, whole_size)
    except FileNotFoundError:
        raise GgufError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise GgufError(f"{where} is a folder, not a GGUF file") from None
    except PermissionError:
        raise GgufError(f"{where} is not readable (permission denied)") from None
    except OSError as exc:
        raise GgufError(f"cannot read {where}: {exc.strerror or exc}") from None


def _parse(
    view: mmap.mmap,
    path: str,
    size: int,
    type_names: dict[int, str],
    type_sizes: dict[int, tuple[int, int]],
    whole_size: int | None = None,
) -> GgufFile:
    if view[:4] != GGUF_MAGIC:
        raise GgufError(f"{path} is not a GGUF file (it starts with {bytes(view[:4])!r})")
    cursor = _Cursor(view, 4, path, size)
    version = cursor.unpack("<I")
    if version < 2:
        raise GgufError(f"{path} is GGUF version {version}; only versions 2 and 3 are read")
    tensor_count = cursor.unpack("<Q")
    kv_count = cursor.unpack("<Q")
    metadata: dict[str, Value] = {}
    arrays: dict[str, ArraySummary] = {}
    for _ in range(kv_count):
        key = cursor.string()
        kind = cursor.unpack("<I")
        if kind == _ARRAY:
            value = cursor.array()
            if isinstance(value, ArraySummary):
                arrays[key] = value
            else:
                metadata[key] = value
        else:
            metadata[key] = cursor.value(kind)
    tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = cursor.unpack("<I")
        shape = tuple(cursor.unpack("<Q") for _ in range(dims))
        type_id = cursor.unpack("<I")
        offset = cursor.unpack("<Q")
        if type_id not in type_sizes:
            raise GgufError(f"{path}: tensor {name} has unknown ggml type {type_id}")
        block, block_bytes = type_sizes[type_id]
        elements = 1
        for dim in shape:
            elements *= dim
        tensors.append(
            TensorInfo(name, type_names[type_id], shape, elements // block * block_bytes, offset)
        )
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_offset = -(-cursor.offset // alignment) * alignment
    end = max((t.offset + t.nbytes for t in tensors), default=0)
    size = whole_size or size
    if data_offset + end > size:
        raise GgufError(
            f"{path} is truncated: its tensors need {data_offset + end} bytes, the file has {size}"
        )
    return GgufFile(path, size, version, metadata, arrays, tuple(tensors), data_offset)


class _Cursor:
    """Reads little-endian GGUF values from a buffer, moving forward."""

    def __init__(self, view: mmap.mmap, offset: int, path: str, size: int) -> None:
        self.view = view
        self.offset = offset
        self.path = path
        self.size = size

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.view, self.offset)
        except struct.error:
            raise GgufError(f"{self.path} is truncated inside its header") from None
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.offset + length
        if end > self.size:
            raise GgufError(f"{self.path} is truncated inside its header")
        text = self.view[self.offset : end].decode("utf-8", errors="replace")
        self.offset = end
        return text

    def value(self, kind: int) -> Scalar:
        if kind == _STRING:
            return self.string()
        fixed = _FIXED.get(kind)
        if fixed is None:
            raise GgufError(f"{self.path}: unknown metadata value type {kind}")
        value: Scalar = self.unpack(fixed[0])
        return value

    def array(self) -> tuple[Scalar, ...] | ArraySummary:
        kind = self.unpack("<I")
        count = self.unpack("<Q")
        if kind == _STRING:
            if count <= _KEEP_ARRAY_MAX:
                return tuple(self.string() for _ in range(count))
            return self._skip_strings(count)
        fixed = _FIXED.get(kind)
        if fixed is None:
            raise GgufError(f"{self.path}: unsupported metadata array of type {kind}")
        fmt, width = fixed
        if count <= _KEEP_ARRAY_MAX:
            try:
                values = struct.unpack_from(f"<{count}{fmt[1]}", self.view, self.offset)
            except struct.error:
                raise GgufError(f"{self.path} is truncated inside its header") from None
            self.offset += count * width
            return tuple(values)
        self.offset += count * width
        return ArraySummary(count)

    def _skip_strings(self, count: int) -> ArraySummary:
        """Walk past `count` strings, adding up their bytes; the hot loop of a vocabulary."""
        view, offset, unpack = self.view, self.offset, struct.unpack_from
        total = 0
        try:
            for _ in range(count):
                (length,) = unpack("<Q", view, offset)
                offset += 8 + length
                total += length
        except struct.error:
            raise GgufError(f"{self.path} is truncated inside its header") from None
        if offset > self.size:
            raise GgufError(f"{self.path} is truncated inside its header")
        self.offset = offset
        return ArraySummary(count, total)
