"""What a reader keeps in memory, and the immutable snapshots its queries read.

A reader maps the vector file and keeps a small index of it (slot -> id, live slots,
metadata postings for filters). Each query first reads the generation; only when it
moved does the reader fetch what changed since, so a query costs one tiny SQLite read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.vectorstores.base import VectorFilter
from search.vectorstores.local import files, index_db

if TYPE_CHECKING:
    from search.vectorstores.local.approximate import ApproximateIndex

_NO_SLOTS = np.empty(0, dtype=np.intp)
logger = logging.getLogger(__name__)
# Past this many vectors written since the approximate index, every query's exact scan of
# them costs more than the index saves (about 16 ms at 10,000 rows of 2048 floats): said
# once per index, since it means the merges (the worker's beat) are not running.
DELTA_WARNING_ROWS = 10_000
_warned_deltas: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Snapshot:
    """What one query needs, never mutated once published, so queries run unlocked."""

    generation: int
    store_id: str
    matrix: np.ndarray  # every mapped slot, (slots, dimension), read-only, float32 or float16
    slot_ids: np.ndarray  # object array: the id in each live slot (free ones: None or stale)
    live: np.ndarray  # bool array: whether a slot holds a record
    lo: int  # first live slot; slots outside [lo, hi) are never scored
    hi: int
    # The generation at which each slot's vector bytes were written (0 where free): an
    # approximate index row counts only while its slot still holds that vector.
    vector_generations: np.ndarray | None = None
    count: int = 0  # live slots
    ann_index: str | None = None  # the approximate index named in meta (its file stem)
    ann: ApproximateIndex | None = None  # that index, opened; None when unused or unusable
    # Live slots written since `ann` was built, sorted (empty without an index).
    delta: np.ndarray | None = None


class ReadCache:
    """The in-process index of the store in `path`, refreshed into snapshots.

    Not thread-safe: its owner calls `refresh` and `candidates` under one lock. The
    snapshots it publishes may be read from any thread.
    """

    def __init__(self, path: Path, dimension: int, *, use_index: bool = False) -> None:
        self.path = path
        self.dimension = dimension
        # Whether to open the approximate index named in meta (never in exact mode, so
        # faiss is not even imported there).
        self.use_index = use_index
        self.reset()

    def reset(self) -> None:
        empty = np.empty((0, self.dimension), dtype=np.float32)
        self._snapshot: Snapshot | None = None
        self._matrix = empty
        self._slot_ids = np.empty(0, dtype=object)
        self._live = np.zeros(0, dtype=bool)
        self._vector_generations = np.zeros(0, dtype=np.int64)
        self._ann_index: str | None = None
        self._ann: ApproximateIndex | None = None
        self._id_to_slot: dict[str, int] = {}
        self._slot_keys: dict[int, tuple[tuple[str, Hashable], ...]] = {}
        self._postings: dict[tuple[str, Hashable], set[int]] = {}

    def refresh(self) -> Snapshot:
        """The current snapshot, brought up to date if another writer moved on."""
        for _ in range(2):
            try:
                return self._refresh()
            except FileNotFoundError:
                # The vector file named by the meta just read was replaced by another
                # precision's (`LocalVectorStore.convert_precision`) and removed before
                # it was mapped: the next read finds the new file under a new store id.
                self.reset()
        return self._refresh()

    def _refresh(self) -> Snapshot:
        with index_db.connect(self.path) as conn:
            # One read transaction, so the rows read match the generation read.
            conn.execute("BEGIN")
            try:
                meta = dict(
                    conn.execute(
                        "SELECT key, value FROM meta "
                        "WHERE key IN "
                        "('generation', 'next_slot', 'store_id', 'ann_index', 'precision')"
                    ).fetchall()
                )
                ann_index = meta.get("ann_index") if self.use_index else None
                snapshot = self._snapshot
                if (
                    snapshot is not None
                    and snapshot.generation == meta["generation"]
                    and snapshot.store_id == meta["store_id"]
                    and snapshot.ann_index == ann_index
                ):
                    return snapshot
                if snapshot is not None and snapshot.store_id != meta["store_id"]:
                    # The directory was deleted and created again, or its vectors were
                    # rewritten in another precision: nothing carries over.
                    self.reset()
                    snapshot = None
                full_load = snapshot is None
                if full_load:
                    freed: list[tuple[int]] = []
                    changed = conn.execute(
                        "SELECT id, slot, metadata, vector_generation FROM records"
                    )
                else:
                    since = snapshot.generation
                    freed = conn.execute(
                        "SELECT slot FROM free_slots WHERE generation > ?", (since,)
                    ).fetchall()
                    changed = conn.execute(
                        "SELECT id, slot, metadata, vector_generation FROM records "
                        "WHERE generation > ?",
                        (since,),
                    )
                changed_rows = changed.fetchall()
            finally:
                conn.execute("COMMIT")

        next_slot = int(meta["next_slot"])
        if next_slot > self._matrix.shape[0]:
            precision = index_db.precision_from_meta(meta.get("precision"))
            self._matrix = files.map_vectors(
                files.vectors_path(self.path, precision), self.dimension
            )
        if full_load:
            self._load(changed_rows, next_slot)
        else:
            # Queries in other threads may hold the last snapshot. `live` is copied before
            # it changes (a delete clears a slot they may score). Ids and vector
            # generations are written in place, as the vector bytes are: only into slots
            # that were free, which no snapshot counts as live; a freed slot is reused
            # only after SLOT_REUSE_GRACE_SECONDS, far longer than a query holds one.
            # Copying them took 50 ms per refresh at a million slots.
            self._live = _grown(self._live, next_slot, False)
            self._slot_ids = _grown(self._slot_ids, next_slot, None, copy=False)
            self._vector_generations = _grown(self._vector_generations, next_slot, 0, copy=False)
            for (slot,) in freed:
                self._clear_slot(slot)
            keys_of = _PostingKeysCache()
            for id_, slot, metadata_json, vector_generation in changed_rows:
                self._set_slot(id_, slot, keys_of[metadata_json])
                self._vector_generations[slot] = vector_generation or 0

        if ann_index != self._ann_index:
            self._ann_index = ann_index
            self._ann = None
            if ann_index is not None:
                from search.vectorstores.local import approximate

                self._ann = approximate.open_for_queries(self.path, ann_index, self.dimension)
        # Counted, not listed: at a million slots, listing the live ones took 8 ms of
        # every refresh after a write; the first and last are found by scanning the ends.
        count = int(np.count_nonzero(self._live))
        lo = int(np.argmax(self._live)) if count else 0
        hi = len(self._live) - int(np.argmax(self._live[::-1])) if count else 0
        delta = _NO_SLOTS
        if self._ann is not None:
            delta = np.flatnonzero(self._live & (self._vector_generations > self._ann.generation))
            _warn_if_delta_large(self.path, self._ann.stem, len(delta))
        self._snapshot = Snapshot(
            generation=int(meta["generation"]),
            store_id=str(meta["store_id"]),
            matrix=self._matrix,
            slot_ids=self._slot_ids,
            live=self._live,
            lo=lo,
            hi=hi,
            vector_generations=self._vector_generations,
            count=count,
            ann_index=ann_index,
            ann=self._ann,
            delta=delta,
        )
        return self._snapshot

    def candidates(self, where: VectorFilter) -> np.ndarray | None:
        """Sorted slots whose metadata passes `where`; None when it keeps all."""
        selected: set[int] | None = None
        for field, values in where.items():
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

    def _clear_slot(self, slot: int) -> None:
        if not self._live[slot]:
            return
        # Its id stays in `_slot_ids` (snapshots read ids in place); `live` says it is gone.
        id_ = self._slot_ids[slot]
        self._live[slot] = False
        del self._id_to_slot[id_]
        for key in self._slot_keys.pop(slot, ()):
            members = self._postings[key]
            members.discard(slot)
            if not members:
                del self._postings[key]

    def _load(self, rows: list[tuple[str, int, str, int | None]], next_slot: int) -> None:
        """Build the cache from every record: what `_set_slot` does, in bulk."""
        ids = np.empty(len(rows), dtype=object)
        ids[:] = [row[0] for row in rows]
        slots = np.fromiter((row[1] for row in rows), dtype=np.intp, count=len(rows))
        # Room for the slots the next writes take: growing the arrays later copies them
        # (25 ms for a million ids), in whichever query comes first after a write.
        room = next_slot + max(1024, next_slot // 4)
        self._slot_ids = _grown(np.empty(0, dtype=object), room, None)
        self._slot_ids[slots] = ids
        self._live = _grown(np.zeros(0, dtype=bool), room, False)
        self._live[slots] = True
        self._vector_generations = _grown(np.zeros(0, dtype=np.int64), room, 0)
        self._vector_generations[slots] = [row[3] or 0 for row in rows]
        self._id_to_slot = dict(zip(ids.tolist(), slots.tolist(), strict=True))
        keys_of = _PostingKeysCache()
        self._slot_keys = {}
        postings: dict[tuple[str, Hashable], list[int]] = {}
        for _, slot, metadata_json, _ in rows:
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


def _grown(array: np.ndarray, length: int, fill: Any, *, copy: bool = True) -> np.ndarray:
    """`array` at least `length` long, with room to spare: a copy, or (`copy=False`) the
    array itself while it is long enough."""
    if length <= len(array):
        return array.copy() if copy else array
    grown = np.full(max(length, math.ceil(len(array) * 1.25)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _warn_if_delta_large(path: Path, stem: str, rows: int) -> None:
    if rows <= DELTA_WARNING_ROWS or (str(path), stem) in _warned_deltas:
        return
    _warned_deltas.add((str(path), stem))
    logger.warning(
        "%s vectors of the local store at %s were written since its approximate index was "
        "built, and every query scans them exactly: is the worker's beat running? "
        "`manage.py vectorstore_compact` merges them now.",
        f"{rows:,}",
        path,
    )
