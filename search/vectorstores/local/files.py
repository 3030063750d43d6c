"""The vector file: `vectors.f32`, a flat float32 array of slots, `dimension` floats each.

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

VECTORS_FILENAME = "vectors.f32"

# The vector file grows by at least this many slots (or a quarter of its size), so
# writers rarely resize it and readers rarely remap it.
_GROWTH_SLOTS = 1024


def row_bytes(dimension: int) -> int:
    """The size of one slot in the vector file."""
    return dimension * np.dtype(np.float32).itemsize


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
    """Every slot of the vector file as a read-only (slots, dimension) array."""
    size = row_bytes(dimension)
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
    return np.frombuffer(mapped, dtype=np.float32).reshape(slots, dimension)
