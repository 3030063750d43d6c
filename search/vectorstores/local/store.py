"""LocalVectorStore: the public methods, over the SQLite index, the vector file and the
in-process read cache (see the package docstring for the design)."""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.vectorstores.base import (
    VectorFilter,
    VectorMatch,
    VectorRecord,
    VectorStore,
    VectorStoreError,
)
from search.vectorstores.local import files, index_db
from search.vectorstores.local.precision import (
    PrecisionReport,
    convert,
    warn_precision_mismatch,
)
from search.vectorstores.local.scoring import gathered_scores, scores_of, top_indices
from search.vectorstores.local.snapshot import ReadCache, Snapshot

# Queries scored in one pass over the rows by `query_many`: bounds its scores to
# rows x 64 float32 (25 MB at 100,000 rows), while a pass's reads are shared by enough
# queries that more would save little.
QUERIES_PER_PASS = 64

INDEX_MODES = ("auto", "exact", "approximate")
PRECISIONS = files.PRECISIONS


class LocalVectorStore(VectorStore):
    """Cosine search over a directory that many processes may open at once: exact, or
    from an approximate index plus an exact scan of what changed since (`index_mode`:
    "approximate" always, "auto" from `exact_below` vectors on, "exact" never).

    `precision` ("float32" or "float16", half the disk and memory) is what a new store
    keeps its vectors in; a store made before keeps the precision it was made with (and
    says so once, in a warning) until `convert_precision` rewrites it."""

    name = "local"

    def __init__(
        self,
        path: str | Path,
        dimension: int,
        *,
        index_mode: str = "auto",
        exact_below: int = 20_000,
        precision: str = "float32",
    ) -> None:
        if dimension <= 0:
            raise ValueError(f"dimension must be positive, not {dimension}.")
        if index_mode not in INDEX_MODES:
            raise ValueError(f"index_mode must be one of {INDEX_MODES}, not {index_mode!r}.")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}.")
        self.index_mode = index_mode
        self.exact_below = int(exact_below)
        self.path = Path(path)
        self.dimension = int(dimension)
        self.requested_precision = precision
        self._lock = threading.Lock()
        self._cache = ReadCache(self.path, self.dimension, use_index=index_mode != "exact")
        self.path.mkdir(parents=True, exist_ok=True)
        stored = index_db.create_or_check(self.path, self.dimension, precision)
        if stored != precision:
            warn_precision_mismatch(self.path, stored, precision)
        _open_stores.add(self)

    def __repr__(self) -> str:
        return f"LocalVectorStore({str(self.path)!r}, dimension={self.dimension})"

    @property
    def precision(self) -> str:
        """The precision the store keeps its vectors in now (read from its index: another
        process may have converted it)."""
        with index_db.connect(self.path) as conn:
            return index_db.meta_precision(conn)

    # Writes

    def upsert(self, records: Iterable[VectorRecord]) -> int:
        # The last record wins when one call names an id twice, as if upserted in turn.
        batch: dict[str, tuple[np.ndarray, str]] = {}
        for record in records:
            vector = np.asarray(record.vector, dtype=np.float32)
            self.check_dimension(vector)
            batch[record.id] = (vector, _metadata_json(record.id, record.metadata))
        if not batch:
            return 0
        ids = list(batch)
        matrix = np.stack([vector for vector, _ in batch.values()])
        if not np.isfinite(matrix).all():
            raise VectorStoreError("A vector holds NaN or infinity; refusing to store it.")

        with index_db.write_transaction(self.path) as conn:
            # Read under the write lock: another process may have converted the store.
            precision = index_db.meta_precision(conn)
            with np.errstate(over="ignore"):  # refused just below, in words
                stored = matrix.astype(files.dtype_of(precision), copy=False)
            if not np.isfinite(stored).all():
                raise VectorStoreError(
                    f"A vector holds values beyond {precision}'s range; refusing to store it."
                )
            row_bytes = files.row_bytes(self.dimension, precision)
            generation = index_db.meta_int(conn, "generation") + 1
            current = index_db.slots_of(conn, ids)
            with files.opened_for_writing(files.vectors_path(self.path, precision)) as fd:
                # Re-upserting an unchanged vector (a reindex from cached embeddings)
                # keeps its slot, so it neither grows the file nor touches vector bytes.
                # Compared as stored: a float16 store keeps a vector that rounds the same.
                kept = {
                    id_
                    for index, id_ in enumerate(ids)
                    if id_ in current
                    and files.read_row(fd, current[id_], row_bytes) == stored[index].tobytes()
                }
                moving = [index for index, id_ in enumerate(ids) if id_ not in kept]
                new_slots = index_db.allocate_slots(conn, len(moving), _slot_reuse_grace_seconds())
                if moving:
                    needed = index_db.meta_int(conn, "next_slot")
                    files.ensure_slots(fd, needed, row_bytes)
                    files.write_rows(fd, stored[moving], new_slots, row_bytes)
                    # Vectors reach the disk before the rows that point at them, so a
                    # crash never leaves a record whose vector is missing.
                    os.fdatasync(fd)

            slot_of = dict(current)
            slot_of.update(zip((ids[index] for index in moving), new_slots, strict=True))
            conn.executemany(
                """
                INSERT INTO records (id, slot, generation, metadata, vector_generation)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    slot = excluded.slot,
                    generation = excluded.generation,
                    metadata = excluded.metadata,
                    vector_generation = COALESCE(
                        excluded.vector_generation, records.vector_generation
                    )
                """,
                # A kept vector keeps its vector generation (None here): the approximate
                # index still holds it, so a reindex leaves nothing for it to catch up on.
                [
                    (id_, slot_of[id_], generation, meta, None if id_ in kept else generation)
                    for id_, (_, meta) in batch.items()
                ],
            )
            replaced = [current[id_] for id_ in ids if id_ in current and id_ not in kept]
            index_db.free_slots(conn, replaced, generation)
            index_db.set_meta(conn, "generation", generation)
        return len(ids)

    def delete(self, ids: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        with index_db.write_transaction(self.path) as conn:
            current = index_db.slots_of(conn, wanted)
            if not current:
                return  # nothing to do, and no reason to make readers refresh
            generation = index_db.meta_int(conn, "generation") + 1
            conn.executemany("DELETE FROM records WHERE id = ?", [(id_,) for id_ in current])
            index_db.free_slots(conn, list(current.values()), generation)
            index_db.set_meta(conn, "generation", generation)

    # Reads

    def query(
        self, vector: np.ndarray, top_k: int, where: VectorFilter | None = None
    ) -> list[VectorMatch]:
        query = np.asarray(vector, dtype=np.float32)
        self.check_dimension(query)
        if top_k <= 0:
            return []
        snapshot, candidates = self._snapshot_and_candidates(where)
        return self._query_snapshot(snapshot, candidates, query, top_k)

    def query_many(
        self, vectors: np.ndarray, top_k: int, where: VectorFilter | None = None
    ) -> list[list[VectorMatch]]:
        """What `query` answers for each vector, from one pass over the rows per
        `QUERIES_PER_PASS` vectors, all against the same snapshot."""
        # Contiguous rows, as a lone query's vector, so each takes the same dot product.
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        self.check_dimensions(queries)
        if top_k <= 0 or len(queries) == 0:
            return [[] for _ in queries]
        snapshot, candidates = self._snapshot_and_candidates(where)
        if self._index_serves(snapshot):
            return [self._query_snapshot(snapshot, candidates, query, top_k) for query in queries]
        results: list[list[VectorMatch]] = []
        for start in range(0, len(queries), QUERIES_PER_PASS):
            batch = queries[start : start + QUERIES_PER_PASS]
            scored = _scored(snapshot, candidates, batch)
            if scored is None:
                return [[] for _ in queries]
            slots, scores = scored
            # One contiguous column per query, as `query` ranks.
            results += [_best(snapshot, slots, column, top_k) for column in scores.T.copy()]
        return results

    def count(self) -> int:
        with index_db.connect(self.path) as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def ids(self) -> set[str]:
        with index_db.connect(self.path) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM records")}

    def compact(self, *, rebuild: bool = False):
        """Build or merge the approximate index now (or, in exact mode, remove it); returns
        an `approximate.CompactionReport` saying what was done."""
        from search.vectorstores.local import approximate

        return approximate.compact(
            self.path,
            self.dimension,
            mode=self.index_mode,
            exact_below=self.exact_below,
            rebuild=rebuild,
        )

    def convert_precision(self, precision: str) -> PrecisionReport:
        """Rewrite the vector file in `precision` ("float32" or "float16"); ids, slots,
        metadata and the approximate index stay as they are (see `precision.convert`)."""
        return convert(self.path, self.dimension, precision)

    def _index_serves(self, snapshot: Snapshot) -> bool:
        if snapshot.ann is None:
            return False
        return self.index_mode == "approximate" or snapshot.count >= self.exact_below

    def _query_snapshot(
        self, snapshot: Snapshot, candidates: np.ndarray | None, query: np.ndarray, top_k: int
    ) -> list[VectorMatch]:
        scored = None
        if self._index_serves(snapshot):
            scored = approximate_scored(snapshot, candidates, query, top_k)
        if scored is None:
            scored = _scored(snapshot, candidates, query)
        if scored is None:
            return []
        slots, scores = scored
        return _best(snapshot, slots, scores, top_k)

    def _snapshot_and_candidates(
        self, where: VectorFilter | None
    ) -> tuple[Snapshot, np.ndarray | None]:
        # Only the refresh and the postings lookup need the lock; the products read an
        # immutable snapshot, so threads of one process score concurrently.
        with self._lock:
            snapshot = self._cache.refresh()
            candidates = self._cache.candidates(where) if where else None
        return snapshot, candidates


def _scored(
    snapshot: Snapshot, candidates: np.ndarray | None, query: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The slots a query may return and their scores (a column per query for a batch),
    or None when none may be returned. Slots outside the filter or free score -inf."""
    lo, hi = snapshot.lo, snapshot.hi
    if hi <= lo or (candidates is not None and len(candidates) == 0):
        return None
    if candidates is not None and len(candidates) * 3 < hi - lo:
        # A selective filter: gathering the candidate rows beats scoring them all.
        return candidates, gathered_scores(snapshot.matrix, candidates, query)
    scores = scores_of(snapshot.matrix[lo:hi], query)
    if candidates is None:
        keep = snapshot.live[lo:hi]
    else:
        keep = np.zeros(hi - lo, dtype=bool)
        keep[candidates - lo] = True
    scores[~keep] = -np.inf
    return np.arange(lo, hi), scores


def approximate_scored(
    snapshot: Snapshot, candidates: np.ndarray | None, query: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    # Imported only once an index is open: exact mode never imports faiss.
    from search.vectorstores.local import approximate

    if candidates is not None and len(candidates) == 0:
        return None
    return approximate.scored(snapshot, candidates, query, top_k)


def _best(
    snapshot: Snapshot, slots: np.ndarray, scores: np.ndarray, top_k: int
) -> list[VectorMatch]:
    return [
        VectorMatch(id=snapshot.slot_ids[slots[index]], score=float(scores[index]))
        for index in top_indices(scores, top_k)
    ]


# Forking while another thread holds a store's lock would leave the child's copy locked
# forever; Celery prefork and gunicorn fork, so each child gets fresh locks.
_open_stores: weakref.WeakSet[LocalVectorStore] = weakref.WeakSet()


def _fresh_locks_after_fork() -> None:
    for store in list(_open_stores):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_after_fork)


def _slot_reuse_grace_seconds() -> float:
    # Read from the package at each write, not bound at import, so that setting
    # `search.vectorstores.local.SLOT_REUSE_GRACE_SECONDS` (tests set 0) takes effect.
    from search.vectorstores import local

    return local.SLOT_REUSE_GRACE_SECONDS


def _metadata_json(id_: str, metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"Metadata of {id_!r} must be JSON-serialisable: {exc}") from exc
