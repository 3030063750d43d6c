"""The SQLite index: schema, meta values, connections and the bookkeeping of slots.

`index.sqlite3` (WAL mode) maps each id to a slot and keeps its metadata; its `meta`
table holds the format, the dimension, the generation counter that every write bumps,
the next slot never used yet, an id that changes when the directory is created again (or
its vector file is rewritten in another precision), and the precision of the vector file
(`float32` where the key is missing: stores made before float16 existed).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from search.vectorstores.base import DimensionMismatch, VectorStoreError
from search.vectorstores.local import files

# 2 added `records.vector_generation` (stores of format 1 are migrated in place).
FORMAT_VERSION = 2

INDEX_FILENAME = "index.sqlite3"

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
        metadata TEXT NOT NULL,
        vector_generation INTEGER
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


@contextmanager
def connect(directory: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the index of the store in `directory`; SQLite's errors become
    `VectorStoreError`."""
    # A connection per call (about half a millisecond) rather than per thread: it
    # cannot leak across a fork (Celery prefork) nor outlive the thread it served.
    try:
        with closing(
            sqlite3.connect(
                directory / INDEX_FILENAME, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
        ) as conn:
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
    except sqlite3.Error as exc:
        raise VectorStoreError(
            f"The local vector store at {directory} could not be used: {exc}"
        ) from exc


@contextmanager
def write_transaction(directory: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding SQLite's write lock (`BEGIN IMMEDIATE`), committed on success."""
    with connect(directory) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def create_or_check(directory: Path, dimension: int, precision: str = "float32") -> str:
    """Create the index if it is missing, its vectors in `precision`; refuse one of
    another format or dimension. Returns the precision the store keeps its vectors in:
    the one recorded when it was created, whatever `precision` asks now."""
    with connect(directory) as conn:
        # WAL lets readers go on while a writer commits; the file keeps the mode.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            created = meta_text(conn, "store_id") is None
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format", FORMAT_VERSION),
                    ("dimension", dimension),
                    ("generation", 0),
                    ("next_slot", 0),
                    ("store_id", uuid.uuid4().hex),
                ],
            )
            if created:
                # Only a new store takes the precision asked for; one made before keeps
                # its own (no key: float32).
                put_meta(conn, "precision", precision)
            if meta_int(conn, "format") == 1:
                _migrate_from_format_1(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        stored_format = meta_int(conn, "format")
        stored_dimension = meta_int(conn, "dimension")
        stored_precision = meta_precision(conn)
    if stored_format != FORMAT_VERSION:
        raise VectorStoreError(
            f"The local vector store at {directory} has format {stored_format}, "
            f"but this code reads format {FORMAT_VERSION}. Rebuild it into a new "
            "directory."
        )
    if stored_dimension != dimension:
        raise DimensionMismatch(
            f"The local vector store at {directory} holds {stored_dimension}-"
            f"dimensional vectors, but {dimension} were asked for. Point "
            "VECTOR_STORE_PATH at a new directory and reindex, or use the model "
            "that built this store."
        )
    return stored_precision


def _migrate_from_format_1(conn: sqlite3.Connection) -> None:
    """Format 2 records when each slot's vector bytes were written (`vector_generation`:
    kept when an unchanged vector is upserted again), so an approximate index knows
    which of its rows still hold their record's vector. Format 1 did not; its records'
    generation is the best bound known."""
    conn.execute("ALTER TABLE records ADD COLUMN vector_generation INTEGER")
    conn.execute("UPDATE records SET vector_generation = generation")
    set_meta(conn, "format", FORMAT_VERSION)


def allocate_slots(conn: sqlite3.Connection, wanted: int, grace_seconds: float) -> list[int]:
    """Slots for `wanted` vectors: freed ones past their grace period, then new."""
    if wanted == 0:
        return []
    reusable = [
        row[0]
        for row in conn.execute(
            "SELECT slot FROM free_slots WHERE freed_at <= ? ORDER BY slot LIMIT ?",
            (time.time() - grace_seconds, wanted),
        )
    ]
    conn.executemany("DELETE FROM free_slots WHERE slot = ?", [(s,) for s in reusable])
    next_slot = meta_int(conn, "next_slot")
    fresh = list(range(next_slot, next_slot + wanted - len(reusable)))
    set_meta(conn, "next_slot", next_slot + len(fresh))
    return reusable + fresh


def free_slots(conn: sqlite3.Connection, slots: list[int], generation: int) -> None:
    """Mark `slots` free as of now, so `allocate_slots` reuses them after the grace."""
    now = time.time()
    conn.executemany(
        "INSERT INTO free_slots (slot, freed_at, generation) VALUES (?, ?, ?)",
        [(slot, now, generation) for slot in slots],
    )


def meta_int(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def set_meta(conn: sqlite3.Connection, key: str, value: int | str) -> None:
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


def meta_precision(conn: sqlite3.Connection) -> str:
    """The precision of the vector file: `float32` or `float16`."""
    return precision_from_meta(meta_text(conn, "precision"))


def precision_from_meta(value: str | None) -> str:
    """The precision a meta value names; a missing one is float32 (stores made before)."""
    precision = "float32" if value is None else str(value)
    if precision not in files.PRECISIONS:
        raise VectorStoreError(
            f"The local vector store keeps its vectors in {precision!r}, which this code "
            f"cannot read (it reads {', '.join(files.PRECISIONS)})."
        )
    return precision


def meta_text(conn: sqlite3.Connection, key: str) -> str | None:
    """A meta value that may be missing (None then)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def put_meta(conn: sqlite3.Connection, key: str, value: int | str | None) -> None:
    """Set (or, with None, remove) a meta value that may not exist yet."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def slots_of(conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    """The slot of each id in `ids` that has a record."""
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
