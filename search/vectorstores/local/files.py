"""The vector file: a flat array of slots, `dimension` numbers each, in the store's
precision: `vectors.f32` (float32, every store made before float16 existed) or
`vectors.f16` (float16, half the disk and memory; LOCAL_STORE_PRECISION).

Writers put vectors into slots with `pwrite` and grow the file sparsely; readers map it
read-only and shared, so every process reads one copy through the page cache.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "float16")
# The file of a float32 store. Code that maps a store's vectors should name the file
# through `vectors_path` (the store's precision is in its meta: `index_db.meta_precision`).
VECTORS_FILENAME = "vectors.f32"
_FILENAMES = {"float32": VECTORS_FILENAME, "float16": "vectors.f16"}
_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}

# The vector file grows by at least this many slots (or a quarter of its size), so
# writers rarely resize it and readers rarely remap it.
_GROWTH_SLOTS = 1024


def vectors_path(directory: Path, precision: str) -> Path:
    """The vector file of a store in `directory` holding `precision` numbers."""
    return directory / _FILENAMES[precision]


def dtype_of(precision: str) -> np.dtype:
    return _DTYPES[precision]


def precision_of_file(path: Path) -> str:
    """The precision a vector file's name says (`vectors.f16`: float16, else float32)."""
    return "float16" if path.name == _FILENAMES["float16"] else "float32"


def row_bytes(dimension: int, precision: str = "float32") -> int:
    """The size of one slot in the vector file."""
    return dimension * _DTYPES[precision].itemsize


@contextmanager
def opened_for_writing(path: Path) -> Iterator[int]:
    """A file descriptor on the vector file, created if missing, closed afterwards."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def read_row(fd: int, slot: int, row_bytes: int) -> bytes:
    """The bytes stored in `slot`."""
    return os.pread(fd, row_bytes, slot * row_bytes)


def ensure_slots(fd: int, needed: int, row_bytes: int) -> None:
    """Grow the vector file (sparsely) to hold `needed` slots, every allocated one."""
    have = os.fstat(fd).st_size // row_bytes
    if have < needed:
        grown = max(needed, have + max(_GROWTH_SLOTS, have // 4))
        os.ftruncate(fd, grown * row_bytes)


def write_rows(fd: int, rows: np.ndarray, slots: list[int], row_bytes: int) -> None:
    """Write `rows[i]` into `slots[i]`, one system call per run of consecutive slots."""
    if not slots:
        return
    order = np.argsort(slots, kind="stable")
    sorted_slots = np.asarray(slots)[order]
    breaks = np.flatnonzero(np.diff(sorted_slots) != 1) + 1
    for run in np.split(np.arange(len(order)), breaks):
        data = memoryview(np.ascontiguousarray(rows[order[run]])).cast("B")
        offset = int(sorted_slots[run[0]]) * row_bytes
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written


def map_vectors(path: Path, dimension: int) -> np.ndarray:
    """Every slot of the vector file as a read-only (slots, dimension) array, of the
    precision its name says (float16 rows are scored against float32 queries by
    `scoring`; code that hands rows elsewhere converts them)."""
    dtype = _DTYPES[precision_of_file(path)]
    size = dimension * dtype.itemsize
    fd = os.open(path, os.O_RDONLY)
    try:
        slots = os.fstat(fd).st_size // size
        # A shared mapping: every process reads the same page-cache pages, and
        # sees a writer's bytes as soon as they are written.
        mapped = mmap.mmap(fd, slots * size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    # The previous mapping is not closed: older snapshots may still be reading it,
    # and it goes away with its last array.
    return np.frombuffer(mapped, dtype=dtype).reshape(slots, dimension)


# Rows converted per write when a store changes precision (8 MiB of float32 at 2048-d).
_CONVERT_ROWS = 1024


def write_converted(
    source: Path, target: Path, dimension: int, used_slots: int, live: np.ndarray
) -> int:
    """Write the vector file `source` again as `target`, in the precision `target`'s name
    says, made durable before it returns; returns its size in bytes.

    It keeps the source's slot count (slots past `used_slots` stay sparse). `live` (bool,
    `used_slots` long) says which slots hold a record: a live vector beyond float16's
    range refuses the conversion (`ValueError`); a free slot's old bytes become zeros.
    The caller holds the write lock, so no writer changes `source` meanwhile.
    """
    from_dtype = _DTYPES[precision_of_file(source)]
    to_dtype = _DTYPES[precision_of_file(target)]
    slots = os.stat(source).st_size // (dimension * from_dtype.itemsize) if source.exists() else 0
    rows = map_vectors(source, dimension) if slots else np.empty((0, dimension), from_dtype)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        with temporary.open("wb") as stream:
            for start in range(0, min(used_slots, len(rows)), _CONVERT_ROWS):
                stop = min(start + _CONVERT_ROWS, used_slots, len(rows))
                with np.errstate(over="ignore"):  # refused or zeroed just below
                    block = rows[start:stop].astype(to_dtype)
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    beyond = np.flatnonzero(~finite & live[start:stop])
                    if len(beyond):
                        raise ValueError(
                            f"the vector in slot {start + int(beyond[0])} has values beyond "
                            f"{to_dtype.name}'s range"
                        )
                    block[~finite] = 0
                stream.write(memoryview(np.ascontiguousarray(block)).cast("B"))
            stream.truncate(slots * dimension * to_dtype.itemsize)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, target)
    sync_directory(target.parent)
    return slots * dimension * to_dtype.itemsize


def sync_directory(directory: Path) -> None:
    """Make renames and removals in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
