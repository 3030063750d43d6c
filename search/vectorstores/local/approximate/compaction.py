"""Building, merging and removing the approximate index, in the background (the worker's
beat) or now (`manage.py vectorstore_compact`)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.vectorstores.local import files, index_db
from search.vectorstores.local.approximate.index_files import (
    INDEX_KIND,
    IndexUnusable,
    ann_dir,
    faiss_module,
    open_index,
    remove_all,
    remove_old_generations,
    write_generation,
)
from search.vectorstores.local.precision import size_text

logger = logging.getLogger(__name__)

# See queries.py for what these were measured against.
HNSW_M = 32
EF_CONSTRUCTION = 128
# A full rebuild replaces merging once this share of the index's rows is dead (HNSW cannot
# remove rows; dead ones only cost memory and a little time until the rebuild).
REBUILD_DEAD_SHARE = 0.2
TRAIN_SAMPLE_ROWS = 65_536  # rows the 8-bit quantiser learns its per-dimension ranges from
ADD_BLOCK_ROWS = 8_192
BUILD_THREADS = 2  # faiss's OpenMP threads while building: leaves inference some cores


@dataclass(frozen=True)
class CompactionReport:
    action: str  # built, merged, current, removed, below, empty, busy
    message: str
    rows: int = 0  # rows in the index now (built or merged) or vectors in the store
    added: int = 0  # rows this compaction added
    dead_rows: int = 0
    seconds: float = 0.0
    file_bytes: int = 0
    generation: int | None = None


def compact(
    path: Path, dimension: int, *, mode: str, exact_below: int, rebuild: bool = False
) -> CompactionReport:
    """Build, merge or remove the approximate index as `mode` asks; safe to run twice,
    and from several processes (a second compactor skips while the first runs)."""
    directory = ann_dir(path)
    directory.mkdir(exist_ok=True)
    with _compaction_lock(directory) as held:
        if not held:
            return CompactionReport("busy", "another compaction is running: nothing to do")
        if mode == "exact":
            return _remove(path)
        started = time.monotonic()
        generation, slots, vector_generations, current_stem, precision = _records(path)
        if mode == "auto" and len(slots) < exact_below:
            return CompactionReport(
                "below",
                f"{len(slots):,} vectors, fewer than LOCAL_STORE_EXACT_BELOW ({exact_below:,}):"
                " queries scan them exactly, no approximate index built",
                rows=len(slots),
            )
        if len(slots) == 0:
            return CompactionReport("empty", "the store is empty: nothing to index")
        current = None
        if current_stem is not None and not rebuild:
            try:
                current = open_index(path, current_stem, dimension, mapped=False, full_check=True)
            except IndexUnusable as exc:
                logger.warning("Rebuilding the approximate index %s: %s", current_stem, exc)
        if current is not None:
            vgen_of_slot = dict(zip(slots.tolist(), vector_generations.tolist(), strict=True))
            dead = sum(
                vgen_of_slot.get(slot) != vgen
                for slot, vgen in zip(
                    current.row_slots.tolist(), current.row_vector_generations.tolist(), strict=True
                )
            )
            changed = vector_generations > current.generation
            if dead > REBUILD_DEAD_SHARE * current.rows:
                current = None
            elif not changed.any():
                return CompactionReport(
                    "current",
                    f"index is current (generation {current.generation}): nothing to do",
                    rows=current.rows,
                    dead_rows=dead,
                    generation=current.generation,
                )
        matrix = files.map_vectors(files.vectors_path(path, precision), dimension)
        faiss = faiss_module()
        faiss.omp_set_num_threads(BUILD_THREADS)
        try:
            if current is None:
                index = faiss.IndexHNSWSQ(
                    dimension, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT
                )
                index.hnsw.efConstruction = EF_CONSTRUCTION
                sample = np.random.default_rng(0).permutation(len(slots))[:TRAIN_SAMPLE_ROWS]
                index.train(np.ascontiguousarray(matrix[np.sort(slots[sample])], dtype=np.float32))
                old_rows = np.empty((0, 2), dtype=np.int64)
                adding = np.ones(len(slots), dtype=bool)
                dead = 0
            else:
                index = current.index
                old_rows = np.stack([current.row_slots, current.row_vector_generations], axis=1)
                adding = changed
            new_slots, new_vgens = slots[adding], vector_generations[adding]
            # A slot rewritten while it is read here has a newer vector generation than
            # its row: the row never counts, and the slot is in the next delta.
            for start in range(0, len(new_slots), ADD_BLOCK_ROWS):
                block = new_slots[start : start + ADD_BLOCK_ROWS]
                index.add(np.ascontiguousarray(matrix[block], dtype=np.float32))
        finally:
            faiss.omp_set_num_threads(1)
        rows = np.concatenate([old_rows, np.stack([new_slots, new_vgens], axis=1).astype(np.int64)])
        stem, file_bytes = write_generation(
            directory,
            index,
            rows,
            generation,
            dimension,
            hnsw_m=HNSW_M,
            ef_construction=EF_CONSTRUCTION,
        )
        with index_db.write_transaction(path) as conn:
            index_db.put_meta(conn, "ann_index", stem)
        remove_old_generations(directory, keep={stem, current_stem})
        seconds = time.monotonic() - started
        if current is None:
            message = (
                f"built approximate index: {len(rows):,} vectors, faiss {INDEX_KIND}, "
                f"{size_text(file_bytes)}, generation {generation}, {seconds:.1f} s"
            )
            return CompactionReport(
                "built", message, len(rows), len(rows), 0, seconds, file_bytes, generation
            )
        message = (
            f"merged {len(new_slots):,} changed vectors into generation {generation} "
            f"({seconds:.1f} s); {len(rows):,} rows, {dead:,} dead "
            f"({dead / len(rows):.1%}), {size_text(file_bytes)}"
        )
        return CompactionReport(
            "merged", message, len(rows), len(new_slots), dead, seconds, file_bytes, generation
        )


def _records(path: Path) -> tuple[int, np.ndarray, np.ndarray, str | None, str]:
    """The store's generation, its live slots and their vector generations, the index meta
    names and the vector file's precision, all from one read transaction."""
    with index_db.connect(path) as conn:
        conn.execute("BEGIN")
        try:
            generation = index_db.meta_int(conn, "generation")
            stem = index_db.meta_text(conn, "ann_index")
            precision = index_db.meta_precision(conn)
            pairs = np.array(
                conn.execute(
                    "SELECT slot, COALESCE(vector_generation, generation) FROM records "
                    "ORDER BY slot"
                ).fetchall(),
                dtype=np.int64,
            ).reshape(-1, 2)
        finally:
            conn.execute("COMMIT")
    return generation, pairs[:, 0].astype(np.intp), pairs[:, 1], stem, precision


def _remove(path: Path) -> CompactionReport:
    with index_db.write_transaction(path) as conn:
        index_db.put_meta(conn, "ann_index", None)
    removed = remove_all(ann_dir(path))
    return CompactionReport(
        "removed",
        f"LOCAL_STORE_INDEX=exact: no approximate index kept (removed {size_text(removed)})",
        file_bytes=removed,
    )


@contextlib.contextmanager
def _compaction_lock(directory: Path) -> Iterator[bool]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
