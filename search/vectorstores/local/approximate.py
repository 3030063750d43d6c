"""The local store's approximate index: faiss HNSW over 8-bit scalar-quantised vectors.

Derived data only (docs/design/approximate-index.md): SQLite and `vectors.f32` stay the
truth. The index proposes candidates; every score returned is the exact float32 cosine
read from `vectors.f32`. `<store>/ann/` holds, per index, `<stem>.faiss` (faiss
`IndexHNSWSQ`), `<stem>.rows` (int64 pairs per index row: slot, vector generation) and
`<stem>.json` (the manifest). Files are written under temporary names, made durable and
renamed; then one SQLite write names the new stem in `meta.ann_index`. They are never
rewritten in place: readers map them, and a truncated mapped file kills its readers.

An index row counts only while its slot is live and still holds the vector generation
the row was built from, so deleted, moved and reused slots are never answered from a
stale index. The live slots written since the index (`Snapshot.delta`) are scored exactly
beside its candidates, so every write is searchable at once in every process; the worker
(or `manage.py vectorstore_compact`) merges them into a new index in the background.

faiss is imported here only, and this module only where the approximate index is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.vectorstores.local import files, index_db
from search.vectorstores.local.scoring import gathered_scores

logger = logging.getLogger(__name__)

ANN_DIRNAME = "ann"
ANN_FORMAT = 1
INDEX_KIND = "HNSW32,SQ8"
# Measured at 100,000 and 300,000 synthetic 2048-d features (docs/design/approximate-index.md):
# M 32 and efConstruction 128 reach recall@10 >= 0.98 at efSearch 24-48, a quarter of the
# float32 memory; efSearch 96 is where the worst query's recall stopped being 0 (>= 0.9),
# and with an exact rerank of 40 candidates recall was 0.99-1.0.
HNSW_M = 32
EF_CONSTRUCTION = 128
EF_SEARCH = 96
EF_SEARCH_MAX = 2048
CANDIDATES_MIN = 40  # index candidates re-scored exactly: max(top_k * 4, this)
# A filter keeping this many rows or fewer is answered by an exact scan of its rows: 10,000
# gathered rows scored in 7.6 ms p50 (one thread), while faiss's filtered HNSW search
# needed efSearch 1024 and 4.4-7.2 ms for recall 0.91-0.93 at a 1% filter. Read at each
# query from this module, so tests can lower it.
FILTER_EXACT_MAX_ROWS = 20_000
# A full rebuild replaces merging once this share of the index's rows is dead (HNSW cannot
# remove rows; dead ones only cost memory and a little time until the rebuild).
REBUILD_DEAD_SHARE = 0.2
TRAIN_SAMPLE_ROWS = 65_536  # rows the 8-bit quantiser learns its per-dimension ranges from
ADD_BLOCK_ROWS = 8_192
BUILD_THREADS = 2  # faiss's OpenMP threads while building: leaves inference some cores

_warned_stems: set[str] = set()
_NO_SLOTS = np.empty(0, dtype=np.intp)


class IndexUnusable(Exception):
    """An index file is missing, of another format, truncated or damaged."""


def _faiss():
    import faiss

    return faiss


def _faiss_version() -> str:
    return ".".join(_faiss().__version__.split(".")[:2])


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
        faiss = _faiss()
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
            faiss = _faiss()
            # The selector points into `bitmap`: both are kept together.
            found = (faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap)), bitmap)
            if len(self._bitmaps) >= 16:
                self._bitmaps.clear()
            self._bitmaps[key] = found
        return found[0]


def scored(
    snapshot, candidates: np.ndarray | None, query: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Slots and their exact scores for one query from the index plus the delta, or None
    when the exact scan must answer (a rare tag, or too few valid candidates)."""
    ann: ApproximateIndex = snapshot.ann
    wanted = max(top_k * 4, CANDIDATES_MIN)
    if candidates is None:
        delta = _NO_SLOTS if snapshot.delta is None else snapshot.delta
        needed = min(top_k, snapshot.count)
        for k in (wanted, wanted * 4):
            found = ann.valid_slots(snapshot, ann.search(query, k, EF_SEARCH))
            if len(found) >= top_k or k >= ann.rows:
                break
    else:
        if len(candidates) <= FILTER_EXACT_MAX_ROWS:
            return None  # the exact scan of a rare tag's rows: exact, and it fills top_k
        delta = _NO_SLOTS if snapshot.delta is None else snapshot.delta
        delta = np.intersect1d(delta, candidates, assume_unique=True)
        needed = min(top_k, len(candidates))
        # A filter keeping a share s of the rows leaves about s of what a search visits.
        ef = int(np.clip(3 * top_k * ann.rows / len(candidates), EF_SEARCH, EF_SEARCH_MAX))
        rows = ann.search(query, wanted, ef, ann.selector(snapshot, candidates))
        found = ann.valid_slots(snapshot, rows)
    slots = np.union1d(found, delta)
    if len(slots) < needed:
        return None
    return slots, gathered_scores(snapshot.matrix, slots, query)


# Opening for queries


def ann_dir(path: Path) -> Path:
    return path / ANN_DIRNAME


def open_for_queries(path: Path, stem: str, dimension: int) -> ApproximateIndex | None:
    """The index `stem`, memory-mapped read-only (its pages shared by every process), or
    None when it cannot be used: queries are then answered exactly, and it is said once."""
    try:
        index = _open(path, stem, dimension, mapped=True, full_check=False)
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
    _faiss().omp_set_num_threads(1)
    return index


def _open(
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
        if full_check and _sha256_of(index_path) != manifest["index_sha256"]:
            raise IndexUnusable("the index file is damaged")
        faiss = _faiss()
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


def _sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Compaction: building and merging


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
        generation, slots, vector_generations, current_stem = _records(path)
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
                current = _open(path, current_stem, dimension, mapped=False, full_check=True)
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
        matrix = files.map_vectors(path / files.VECTORS_FILENAME, dimension)
        faiss = _faiss()
        faiss.omp_set_num_threads(BUILD_THREADS)
        try:
            if current is None:
                index = faiss.IndexHNSWSQ(
                    dimension, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT
                )
                index.hnsw.efConstruction = EF_CONSTRUCTION
                sample = np.random.default_rng(0).permutation(len(slots))[:TRAIN_SAMPLE_ROWS]
                index.train(np.ascontiguousarray(matrix[np.sort(slots[sample])]))
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
        stem, file_bytes = _write_generation(directory, index, rows, generation, dimension)
        with index_db.write_transaction(path) as conn:
            index_db.put_meta(conn, "ann_index", stem)
        _remove_old_generations(directory, keep={stem, current_stem})
        seconds = time.monotonic() - started
        if current is None:
            message = (
                f"built approximate index: {len(rows):,} vectors, faiss {INDEX_KIND}, "
                f"{_size(file_bytes)}, generation {generation}, {seconds:.1f} s"
            )
            return CompactionReport(
                "built", message, len(rows), len(rows), 0, seconds, file_bytes, generation
            )
        message = (
            f"merged {len(new_slots):,} changed vectors into generation {generation} "
            f"({seconds:.1f} s); {len(rows):,} rows, {dead:,} dead "
            f"({dead / len(rows):.1%}), {_size(file_bytes)}"
        )
        return CompactionReport(
            "merged", message, len(rows), len(new_slots), dead, seconds, file_bytes, generation
        )


def _records(path: Path) -> tuple[int, np.ndarray, np.ndarray, str | None]:
    """The store's generation, its live slots and their vector generations, and the index
    meta names, all from one read transaction."""
    with index_db.connect(path) as conn:
        conn.execute("BEGIN")
        try:
            generation = index_db.meta_int(conn, "generation")
            stem = index_db.meta_text(conn, "ann_index")
            pairs = np.array(
                conn.execute(
                    "SELECT slot, COALESCE(vector_generation, generation) FROM records "
                    "ORDER BY slot"
                ).fetchall(),
                dtype=np.int64,
            ).reshape(-1, 2)
        finally:
            conn.execute("COMMIT")
    return generation, pairs[:, 0].astype(np.intp), pairs[:, 1], stem


def _write_generation(
    directory: Path, index, rows: np.ndarray, generation: int, dimension: int
) -> tuple[str, int]:
    """Write a new index generation's three files; the manifest last."""
    stem = f"hnsw-{generation}-{uuid.uuid4().hex[:8]}"
    index_path, rows_path = directory / f"{stem}.faiss", directory / f"{stem}.rows"
    temporary = directory / f".{stem}.faiss.tmp"
    _faiss().write_index(index, str(temporary))
    _durable_rename(temporary, index_path)
    rows_bytes = np.ascontiguousarray(rows, dtype=np.int64).tobytes()
    _write_durably(rows_path, rows_bytes)
    manifest = {
        "format": ANN_FORMAT,
        "kind": INDEX_KIND,
        "faiss": _faiss_version(),
        "dimension": dimension,
        "hnsw_m": HNSW_M,
        "ef_construction": EF_CONSTRUCTION,
        "generation": generation,
        "rows": len(rows),
        "rows_sha256": hashlib.sha256(rows_bytes).hexdigest(),
        "index_bytes": index_path.stat().st_size,
        "index_sha256": _sha256_of(index_path),
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


def _remove_old_generations(directory: Path, keep: set[str | None]) -> None:
    """Unlink other generations' files and leftovers of interrupted compactions. The one
    just replaced is kept: a reader may have read its name a moment before the switch.
    Readers that mapped an unlinked file keep its pages until they let go."""
    for file in directory.iterdir():
        if file.name == ".lock":
            continue
        stem = file.name.split(".")[0]
        if file.name.startswith(".") or stem not in keep:
            file.unlink(missing_ok=True)


def _remove(path: Path) -> CompactionReport:
    with index_db.write_transaction(path) as conn:
        index_db.put_meta(conn, "ann_index", None)
    directory = ann_dir(path)
    removed = 0
    for file in directory.iterdir():
        if file.name != ".lock":
            removed += file.stat().st_size
            file.unlink(missing_ok=True)
    return CompactionReport(
        "removed",
        f"LOCAL_STORE_INDEX=exact: no approximate index kept (removed {_size(removed)})",
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


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError  # unreachable
