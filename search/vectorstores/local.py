"""An embedded vector store: exact cosine search, shared by processes through the disk.

One directory holds two files:

- `index.sqlite3` (WAL mode) maps each id to a slot and keeps its metadata, the store's
  dimension and a generation counter that every write bumps;
- `vectors.f32` is a flat float32 array of slots, `dimension` floats each.

Writers serialise on SQLite's write lock (`BEGIN IMMEDIATE`), write vector bytes into
slots no reader is using, make them durable, then commit the rows that point at them.
Readers memory-map the vector file (so every process shares one copy through the page
cache) and keep a small in-process index (slot -> id, live slots, metadata postings for
filters). Each query first reads the generation; only when it moved does the reader
fetch what changed since, so a query costs one tiny SQLite read plus a matrix-vector
product. No Django here on purpose: it is tested and benchmarked without settings.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.vectorstores.base import (
    DimensionMismatch,
    VectorFilter,
    VectorMatch,
    VectorRecord,
    VectorStore,
    VectorStoreError,
)

FORMAT_VERSION = 1

# A freed slot is rewritten only after this long. A reader may still be scoring a slot
# it saw live when its query began; a query takes tens of milliseconds, so waiting
# seconds means no reader ever scores a half-written vector under another id's name.
SLOT_REUSE_GRACE_SECONDS = 10.0

# The vector file grows by at least this many slots (or a quarter of its size), so
# writers rarely resize it and readers rarely remap it.
_GROWTH_SLOTS = 1024

# Rows gathered per block when a filter keeps few records (see `_gathered_scores`).
_GATHER_BYTES = 4 * 1024 * 1024

# SQLite waits this long for another process's write to finish before giving up.
_BUSY_TIMEOUT_SECONDS = 30.0

# Stays under SQLite's bound on host parameters in one statement on old builds too.
_IN_CHUNK = 900

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS records (
        id TEXT PRIMARY KEY,
        slot INTEGER NOT NULL UNIQUE,
        generation INTEGER NOT NULL,
        metadata TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS records_by_generation ON records (generation)",
    """
    CREATE TABLE IF NOT EXISTS free_slots (
        slot INTEGER PRIMARY KEY,
        freed_at REAL NOT NULL,
        generation INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS free_slots_by_generation ON free_slots (generation)",
)


@dataclass(frozen=True)
class _Snapshot:
    """What one query needs, never mutated once published, so queries run unlocked."""

    generation: int
    store_id: str
    matrix: np.ndarray  # every mapped slot, (slots, dimension), read-only
    slot_ids: np.ndarray  # object array: the id in each slot, None where free
    live: np.ndarray  # bool array: whether a slot holds a record
    lo: int  # first live slot; slots outside [lo, hi) are never scored
    hi: int


class LocalVectorStore(VectorStore):
    """Exact cosine search over a directory that many processes may open at once."""

    name = "local"

    def __init__(self, path: str | Path, dimension: int) -> None:
        if dimension <= 0:
            raise ValueError(f"dimension must be positive, not {dimension}.")
        self.path = Path(path)
        self.dimension = int(dimension)
        self._db_path = self.path / "index.sqlite3"
        self._vectors_path = self.path / "vectors.f32"
        self._row_bytes = self.dimension * np.dtype(np.float32).itemsize
        self._lock = threading.Lock()
        self._reset_cache()
        self.path.mkdir(parents=True, exist_ok=True)
        self._create_or_check()
        _open_stores.add(self)

    def __repr__(self) -> str:
        return f"LocalVectorStore({str(self.path)!r}, dimension={self.dimension})"

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

        with self._write_transaction() as conn:
            generation = _meta_int(conn, "generation") + 1
            current = _slots_of(conn, ids)
            fd = os.open(self._vectors_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                # Re-upserting an unchanged vector (a reindex from cached embeddings)
                # keeps its slot, so it neither grows the file nor touches vector bytes.
                kept = {
                    id_
                    for index, id_ in enumerate(ids)
                    if id_ in current
                    and os.pread(fd, self._row_bytes, current[id_] * self._row_bytes)
                    == matrix[index].tobytes()
                }
                moving = [index for index, id_ in enumerate(ids) if id_ not in kept]
                new_slots = self._allocate(conn, len(moving))
                if moving:
                    self._ensure_slots(fd, conn)
                    _write_rows(fd, matrix[moving], new_slots, self._row_bytes)
                    # Vectors reach the disk before the rows that point at them, so a
                    # crash never leaves a record whose vector is missing.
                    os.fdatasync(fd)
            finally:
                os.close(fd)

            slot_of = dict(current)
            slot_of.update(zip((ids[index] for index in moving), new_slots, strict=True))
            conn.executemany(
                """
                INSERT INTO records (id, slot, generation, metadata) VALUES (?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    slot = excluded.slot,
                    generation = excluded.generation,
                    metadata = excluded.metadata
                """,
                [(id_, slot_of[id_], generation, batch[id_][1]) for id_ in ids],
            )
            replaced = [current[id_] for id_ in ids if id_ in current and id_ not in kept]
            self._free(conn, replaced, generation)
            _set_meta(conn, "generation", generation)
        return len(ids)

    def delete(self, ids: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        with self._write_transaction() as conn:
            current = _slots_of(conn, wanted)
            if not current:
                return  # nothing to do, and no reason to make readers refresh
            generation = _meta_int(conn, "generation") + 1
            conn.executemany("DELETE FROM records WHERE id = ?", [(id_,) for id_ in current])
            self._free(conn, list(current.values()), generation)
            _set_meta(conn, "generation", generation)

    # Reads

    def query(
        self, vector: np.ndarray, top_k: int, filter: VectorFilter | None = None
    ) -> list[VectorMatch]:
        query = np.asarray(vector, dtype=np.float32)
        self.check_dimension(query)
        if top_k <= 0:
            return []
        # Only the refresh and the postings lookup need the lock; the product below
        # reads an immutable snapshot, so threads of one process score concurrently.
        with self._lock:
            snapshot = self._fresh_snapshot()
            candidates = self._candidates(filter) if filter else None

        lo, hi = snapshot.lo, snapshot.hi
        if hi <= lo or (candidates is not None and len(candidates) == 0):
            return []
        if candidates is not None and len(candidates) * 3 < hi - lo:
            # A selective filter: gathering the candidate rows beats scoring them all.
            scores = _gathered_scores(snapshot.matrix, candidates, query)
            slots = candidates
        else:
            scores = snapshot.matrix[lo:hi] @ query
            if candidates is None:
                keep = snapshot.live[lo:hi]
            else:
                keep = np.zeros(hi - lo, dtype=bool)
                keep[candidates - lo] = True
            scores[~keep] = -np.inf
            slots = np.arange(lo, hi)

        best = _top_indices(scores, top_k)
        return [
            VectorMatch(id=snapshot.slot_ids[slots[index]], score=float(scores[index]))
            for index in best
        ]

    def count(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def ids(self) -> set[str]:
        with self._connection() as conn:
            return {row[0] for row in conn.execute("SELECT id FROM records")}

    # SQLite

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # A connection per call (about half a millisecond) rather than per thread: it
        # cannot leak across a fork (Celery prefork) nor outlive the thread it served.
        try:
            with closing(
                sqlite3.connect(self._db_path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
            ) as conn:
                conn.execute("PRAGMA synchronous = NORMAL")
                yield conn
        except sqlite3.Error as exc:
            raise VectorStoreError(
                f"The local vector store at {self.path} could not be used: {exc}"
            ) from exc

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _create_or_check(self) -> None:
        with self._connection() as conn:
            # WAL lets readers go on while a writer commits; the file keeps the mode.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format", FORMAT_VERSION),
                        ("dimension", self.dimension),
                        ("generation", 0),
                        ("next_slot", 0),
                        ("store_id", uuid.uuid4().hex),
                    ],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            stored_format = _meta_int(conn, "format")
            stored_dimension = _meta_int(conn, "dimension")
        if stored_format != FORMAT_VERSION:
            raise VectorStoreError(
                f"The local vector store at {self.path} has format {stored_format}, "
                f"but this code reads format {FORMAT_VERSION}. Rebuild it into a new "
                "directory."
            )
        if stored_dimension != self.dimension:
            raise DimensionMismatch(
                f"The local vector store at {self.path} holds {stored_dimension}-"
                f"dimensional vectors, but {self.dimension} were asked for. Point "
                "VECTOR_STORE_PATH at a new directory and reindex, or use the model "
                "that built this store."
            )

    def _allocate(self, conn: sqlite3.Connection, wanted: int) -> list[int]:
        """Slots for `wanted` vectors: freed ones past their grace period, then new."""
        if wanted == 0:
            return []
        reusable = [
            row[0]
            for row in conn.execute(
                "SELECT slot FROM free_slots WHERE freed_at <= ? ORDER BY slot LIMIT ?",
                (time.time() - SLOT_REUSE_GRACE_SECONDS, wanted),
            )
        ]
        conn.executemany("DELETE FROM free_slots WHERE slot = ?", [(s,) for s in reusable])
        next_slot = _meta_int(conn, "next_slot")
        fresh = list(range(next_slot, next_slot + wanted - len(reusable)))
        _set_meta(conn, "next_slot", next_slot + len(fresh))
        return reusable + fresh

    def _free(self, conn: sqlite3.Connection, slots: list[int], generation: int) -> None:
        now = time.time()
        conn.executemany(
            "INSERT INTO free_slots (slot, freed_at, generation) VALUES (?, ?, ?)",
            [(slot, now, generation) for slot in slots],
        )

    def _ensure_slots(self, fd: int, conn: sqlite3.Connection) -> None:
        """Grow the vector file (sparsely) to hold every allocated slot."""
        needed = _meta_int(conn, "next_slot")
        have = os.fstat(fd).st_size // self._row_bytes
        if have < needed:
            grown = max(needed, have + max(_GROWTH_SLOTS, have // 4))
            os.ftruncate(fd, grown * self._row_bytes)

    # The in-process cache

    def _reset_cache(self) -> None:
        empty = np.empty((0, self.dimension), dtype=np.float32)
        self._snapshot: _Snapshot | None = None
        self._matrix = empty
        self._slot_ids = np.empty(0, dtype=object)
        self._live = np.zeros(0, dtype=bool)
        self._id_to_slot: dict[str, int] = {}
        self._slot_keys: dict[int, tuple[tuple[str, Hashable], ...]] = {}
        self._postings: dict[tuple[str, Hashable], set[int]] = {}

    def _fresh_snapshot(self) -> _Snapshot:
        """The current snapshot, brought up to date if another writer moved on."""
        with self._connection() as conn:
            # One read transaction, so the rows read match the generation read.
            conn.execute("BEGIN")
            try:
                meta = dict(
                    conn.execute(
                        "SELECT key, value FROM meta "
                        "WHERE key IN ('generation', 'next_slot', 'store_id')"
                    ).fetchall()
                )
                snapshot = self._snapshot
                if (
                    snapshot is not None
                    and snapshot.generation == meta["generation"]
                    and snapshot.store_id == meta["store_id"]
                ):
                    return snapshot
                if snapshot is not None and snapshot.store_id != meta["store_id"]:
                    # The directory was deleted and created again: nothing carries over.
                    self._reset_cache()
                    snapshot = None
                full_load = snapshot is None
                if full_load:
                    freed: list[tuple[int]] = []
                    changed = conn.execute("SELECT id, slot, metadata FROM records")
                else:
                    since = snapshot.generation
                    freed = conn.execute(
                        "SELECT slot FROM free_slots WHERE generation > ?", (since,)
                    ).fetchall()
                    changed = conn.execute(
                        "SELECT id, slot, metadata FROM records WHERE generation > ?",
                        (since,),
                    )
                changed_rows = changed.fetchall()
            finally:
                conn.execute("COMMIT")

        next_slot = int(meta["next_slot"])
        if next_slot > self._matrix.shape[0]:
            self._matrix = self._map_vectors()
        if full_load:
            self._load(changed_rows, next_slot)
        else:
            # Copy before changing: queries in other threads may hold the last snapshot.
            self._slot_ids = _grown(self._slot_ids, next_slot, None)
            self._live = _grown(self._live, next_slot, False)
            for (slot,) in freed:
                self._clear_slot(slot)
            keys_of = _PostingKeysCache()
            for id_, slot, metadata_json in changed_rows:
                self._set_slot(id_, slot, keys_of[metadata_json])

        live_slots = np.flatnonzero(self._live)
        self._snapshot = _Snapshot(
            generation=int(meta["generation"]),
            store_id=str(meta["store_id"]),
            matrix=self._matrix,
            slot_ids=self._slot_ids,
            live=self._live,
            lo=int(live_slots[0]) if len(live_slots) else 0,
            hi=int(live_slots[-1]) + 1 if len(live_slots) else 0,
        )
        return self._snapshot

    def _map_vectors(self) -> np.ndarray:
        fd = os.open(self._vectors_path, os.O_RDONLY)
        try:
            slots = os.fstat(fd).st_size // self._row_bytes
            # A shared mapping: every process reads the same page-cache pages, and
            # sees a writer's bytes as soon as they are written.
            mapped = mmap.mmap(fd, slots * self._row_bytes, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        # The previous mapping is not closed: older snapshots may still be reading it,
        # and it goes away with its last array.
        return np.frombuffer(mapped, dtype=np.float32).reshape(slots, self.dimension)

    def _clear_slot(self, slot: int) -> None:
        id_ = self._slot_ids[slot]
        if id_ is None:
            return
        self._slot_ids[slot] = None
        self._live[slot] = False
        del self._id_to_slot[id_]
        for key in self._slot_keys.pop(slot, ()):
            members = self._postings[key]
            members.discard(slot)
            if not members:
                del self._postings[key]

    def _load(self, rows: list[tuple[str, int, str]], next_slot: int) -> None:
        """Build the cache from every record: what `_set_slot` does, in bulk."""
        ids = np.empty(len(rows), dtype=object)
        ids[:] = [row[0] for row in rows]
        slots = np.fromiter((row[1] for row in rows), dtype=np.intp, count=len(rows))
        self._slot_ids = _grown(np.empty(0, dtype=object), next_slot, None)
        self._slot_ids[slots] = ids
        self._live = _grown(np.zeros(0, dtype=bool), next_slot, False)
        self._live[slots] = True
        self._id_to_slot = dict(zip(ids.tolist(), slots.tolist(), strict=True))
        keys_of = _PostingKeysCache()
        self._slot_keys = {}
        postings: dict[tuple[str, Hashable], list[int]] = {}
        for _, slot, metadata_json in rows:
            keys = keys_of[metadata_json]
            if keys:
                self._slot_keys[slot] = keys
                for key in keys:
                    postings.setdefault(key, []).append(slot)
        self._postings = {key: set(members) for key, members in postings.items()}

    def _set_slot(self, id_: str, slot: int, keys: tuple[tuple[str, Hashable], ...]) -> None:
        # Clearing first keeps slot -> id and id -> slot mirror images whatever order
        # the changed rows arrive in (an id may have moved into a slot another left).
        previous = self._id_to_slot.get(id_)
        if previous is not None:
            self._clear_slot(previous)
        self._clear_slot(slot)
        self._slot_ids[slot] = id_
        self._live[slot] = True
        self._id_to_slot[id_] = slot
        if keys:
            self._slot_keys[slot] = keys
            for key in keys:
                self._postings.setdefault(key, set()).add(slot)

    def _candidates(self, filter: VectorFilter) -> np.ndarray | None:
        """Sorted slots whose metadata passes `filter`; None when it keeps all."""
        selected: set[int] | None = None
        for field, values in filter.items():
            if isinstance(values, str):
                values = [values]  # a lone value, not a sequence of characters
            matching: set[int] = set()
            for value in values:
                if isinstance(value, Hashable):
                    matching |= self._postings.get((field, value), set())
            selected = matching if selected is None else selected & matching
            if not selected:
                break
        if selected is None:
            return None
        return np.sort(np.fromiter(selected, dtype=np.intp, count=len(selected)))


# Forking while another thread holds a store's lock would leave the child's copy locked
# forever; Celery prefork and gunicorn fork, so each child gets fresh locks.
_open_stores: weakref.WeakSet[LocalVectorStore] = weakref.WeakSet()


def _fresh_locks_after_fork() -> None:
    for store in list(_open_stores):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_after_fork)


def _metadata_json(id_: str, metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"Metadata of {id_!r} must be JSON-serialisable: {exc}") from exc


class _PostingKeysCache(dict[str, tuple[tuple[str, Hashable], ...]]):
    """Metadata JSON -> the (field, value) pairs a filter can match in it.

    Many records share their metadata (the same tags), so each distinct text is parsed
    once per refresh, and the records share one tuple.
    """

    def __missing__(self, metadata_json: str) -> tuple[tuple[str, Hashable], ...]:
        keys: list[tuple[str, Hashable]] = []
        for field, value in json.loads(metadata_json).items():
            # One pair per element of a list value; JSON's other containers cannot be
            # matched by a filter's values, so they are left out.
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, (list, dict)):
                    keys.append((field, item))
        self[metadata_json] = result = tuple(dict.fromkeys(keys))
        return result


def _gathered_scores(matrix: np.ndarray, slots: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`matrix[slots] @ query`, gathered a few megabytes at a time.

    One big gather would fault in a fresh buffer as large as the rows it copies, which
    costs more than the product; small blocks reuse the same warm memory.
    """
    block = max(1, _GATHER_BYTES // (matrix.shape[1] * matrix.itemsize))
    scores = np.empty(len(slots), dtype=np.float32)
    for start in range(0, len(slots), block):
        scores[start : start + block] = matrix[slots[start : start + block]] @ query
    return scores


def _top_indices(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the `top_k` highest finite scores, best first."""
    k = min(top_k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return best[np.isfinite(scores[best])]


def _grown(array: np.ndarray, length: int, fill: Any) -> np.ndarray:
    """A copy of `array` at least `length` long, with room to spare."""
    if length <= len(array):
        return array.copy()
    grown = np.full(max(length, math.ceil(len(array) * 1.25)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _meta_int(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: int | str) -> None:
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


def _slots_of(conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        placeholders = ",".join("?" * len(chunk))
        found.update(
            conn.execute(
                f"SELECT id, slot FROM records WHERE id IN ({placeholders})", chunk
            ).fetchall()
        )
    return found


def _write_rows(fd: int, rows: np.ndarray, slots: list[int], row_bytes: int) -> None:
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
