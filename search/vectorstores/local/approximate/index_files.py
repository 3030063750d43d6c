"""An approximate index's files: opening a generation for queries (memory-mapped) or for
merging, writing a new generation durably, and removing old ones.

`<store>/ann/` holds, per generation, `<stem>.faiss` (faiss `IndexHNSWSQ`), `<stem>.rows`
(int64 pairs per index row: slot, vector generation) and `<stem>.json` (the manifest,
written last). Files are written under temporary names, made durable and renamed; then
one SQLite write names the new stem in `meta.ann_index`. They are never rewritten in
place: readers map them, and a truncated mapped file kills its readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ANN_DIRNAME = "ann"
ANN_FORMAT = 1
INDEX_KIND = "HNSW32,SQ8"

_warned_stems: set[str] = set()


class IndexUnusable(Exception):
    """An index file is missing, of another format, truncated or damaged."""


def faiss_module():
    """faiss, imported on first use: exact mode never imports it."""
    import faiss

    return faiss


def _faiss_version() -> str:
    return ".".join(faiss_module().__version__.split(".")[:2])


@dataclass
class ApproximateIndex:
    """An opened index generation: faiss's index and its rows' (slot, vector generation)."""

    stem: str
    generation: int  # the store generation it was built (or last merged) at
    index: Any
    row_slots: np.ndarray
    row_vector_generations: np.ndarray
    _valid_rows: tuple[int, np.ndarray] | None = field(default=None, repr=False)
    _bitmaps: dict[tuple, Any] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return len(self.row_slots)

    def search(self, query: np.ndarray, k: int, ef: int, selector: Any = None) -> np.ndarray:
        """Index rows of the `k` nearest (fewer where the index holds fewer)."""
        faiss = faiss_module()
        params = faiss.SearchParametersHNSW(efSearch=int(ef))
        if selector is not None:
            params.sel = selector
        _, labels = self.index.search(query.reshape(1, -1), int(k), params=params)
        labels = labels[0]
        return labels[labels >= 0]

    def valid_slots(self, snapshot, rows: np.ndarray) -> np.ndarray:
        """The slots of `rows` that still hold the vector the row was built from."""
        slots = self.row_slots[rows]
        keep = snapshot.live[slots] & (
            snapshot.vector_generations[slots] == self.row_vector_generations[rows]
        )
        return np.unique(slots[keep])

    def valid_rows(self, snapshot) -> np.ndarray:
        """Whether each row is valid in `snapshot` (computed once per snapshot)."""
        cached = self._valid_rows
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        slots = self.row_slots
        valid = snapshot.live[slots] & (
            snapshot.vector_generations[slots] == self.row_vector_generations
        )
        self._valid_rows = (snapshot.generation, valid)
        return valid

    def selector(self, snapshot, candidates: np.ndarray):
        """A faiss selector of the valid rows whose slot is in `candidates` (sorted)."""
        key = (snapshot.generation, hash(candidates.tobytes()))
        found = self._bitmaps.get(key)
        if found is None:
            passes = np.zeros(len(snapshot.live), dtype=bool)
            passes[candidates] = True
            keep = self.valid_rows(snapshot) & passes[self.row_slots]
            bitmap = np.packbits(keep, bitorder="little")
            faiss = faiss_module()
            # The selector points into `bitmap`: both are kept together.
            found = (faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap)), bitmap)
            if len(self._bitmaps) >= 16:
                self._bitmaps.clear()
            self._bitmaps[key] = found
        return found[0]


def ann_dir(path: Path) -> Path:
    return path / ANN_DIRNAME


def open_for_queries(path: Path, stem: str, dimension: int) -> ApproximateIndex | None:
    """The index `stem`, memory-mapped read-only (its pages shared by every process), or
    None when it cannot be used: queries are then answered exactly, and it is said once."""
    try:
        index = open_index(path, stem, dimension, mapped=True, full_check=False)
    except IndexUnusable as exc:
        if stem not in _warned_stems:
            _warned_stems.add(stem)
            logger.warning(
                "The approximate index %s of the local vector store at %s cannot be used "
                "(%s); queries scan every vector exactly until vectorstore_compact "
                "(or the worker) rebuilds it.",
                stem,
                path,
                exc,
            )
        return None
    # One query opens no parallel region; a web process needs no OpenMP threads.
    faiss_module().omp_set_num_threads(1)
    return index


def open_index(
    path: Path, stem: str, dimension: int, *, mapped: bool, full_check: bool
) -> ApproximateIndex:
    directory = ann_dir(path)
    try:
        manifest = json.loads((directory / f"{stem}.json").read_text())
        expected = {
            "format": ANN_FORMAT,
            "kind": INDEX_KIND,
            "dimension": dimension,
            "faiss": _faiss_version(),
        }
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise IndexUnusable(f"{key} is {manifest.get(key)!r}, not {value!r}")
        rows_path, index_path = directory / f"{stem}.rows", directory / f"{stem}.faiss"
        rows_count = int(manifest["rows"])
        if rows_path.stat().st_size != rows_count * 16:
            raise IndexUnusable("the rows file has the wrong size")
        # Checked before mapping: reading past the end of a truncated mapped file kills.
        if index_path.stat().st_size != int(manifest["index_bytes"]):
            raise IndexUnusable("the index file has the wrong size")
        rows_bytes = rows_path.read_bytes()
        if hashlib.sha256(rows_bytes).hexdigest() != manifest["rows_sha256"]:
            raise IndexUnusable("the rows file is damaged")
        if full_check and sha256_of(index_path) != manifest["index_sha256"]:
            raise IndexUnusable("the index file is damaged")
        faiss = faiss_module()
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mapped else 0
        index = faiss.read_index(str(index_path), flags)
        if index.ntotal != rows_count or index.d != dimension:
            raise IndexUnusable("the index file does not match its manifest")
    except IndexUnusable:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise IndexUnusable(str(exc) or type(exc).__name__) from exc
    rows = np.frombuffer(rows_bytes, dtype=np.int64).reshape(-1, 2)
    return ApproximateIndex(
        stem=stem,
        generation=int(manifest["generation"]),
        index=index,
        row_slots=rows[:, 0].astype(np.intp),
        row_vector_generations=rows[:, 1].copy(),
    )


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_generation(
    directory: Path, index, rows: np.ndarray, generation: int, dimension: int, **build: Any
) -> tuple[str, int]:
    """Write a new index generation's three files, the manifest last (`build`: how it was
    built, recorded in the manifest); returns its stem and the bytes written."""
    stem = f"hnsw-{generation}-{uuid.uuid4().hex[:8]}"
    index_path, rows_path = directory / f"{stem}.faiss", directory / f"{stem}.rows"
    temporary = directory / f".{stem}.faiss.tmp"
    faiss_module().write_index(index, str(temporary))
    _durable_rename(temporary, index_path)
    rows_bytes = np.ascontiguousarray(rows, dtype=np.int64).tobytes()
    _write_durably(rows_path, rows_bytes)
    manifest = {
        "format": ANN_FORMAT,
        "kind": INDEX_KIND,
        "faiss": _faiss_version(),
        "dimension": dimension,
        **build,
        "generation": generation,
        "rows": len(rows),
        "rows_sha256": hashlib.sha256(rows_bytes).hexdigest(),
        "index_bytes": index_path.stat().st_size,
        "index_sha256": sha256_of(index_path),
    }
    _write_durably(directory / f"{stem}.json", json.dumps(manifest, indent=1).encode())
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return stem, manifest["index_bytes"] + len(rows_bytes)


def _write_durably(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    with temporary.open("wb") as stream:
        stream.write(data)
    _durable_rename(temporary, target)


def _durable_rename(temporary: Path, target: Path) -> None:
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, target)


def remove_old_generations(directory: Path, keep: set[str | None]) -> None:
    """Unlink other generations' files and leftovers of interrupted compactions. The one
    just replaced is kept: a reader may have read its name a moment before the switch.
    Readers that mapped an unlinked file keep its pages until they let go."""
    for file in directory.iterdir():
        if file.name == ".lock":
            continue
        stem = file.name.split(".")[0]
        if file.name.startswith(".") or stem not in keep:
            file.unlink(missing_ok=True)


def remove_all(directory: Path) -> int:
    """Unlink every index file (not the compaction lock); returns the bytes freed."""
    removed = 0
    for file in directory.iterdir():
        if file.name != ".lock":
            removed += file.stat().st_size
            file.unlink(missing_ok=True)
    return removed
