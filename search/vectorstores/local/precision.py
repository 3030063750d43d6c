"""The precision a local store keeps its vectors in (float32, or float16: half the disk
and memory), and rewriting a store's vector file in the other one."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.vectorstores.base import VectorStoreError
from search.vectorstores.local import files, index_db

PRECISIONS = files.PRECISIONS

logger = logging.getLogger(__name__)
# (path, stored precision, asked precision) already warned about in this process.
_warned_precisions: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class PrecisionReport:
    """What `convert_precision` did: action is "converted" or "current"."""

    action: str
    message: str
    precision_before: str
    precision: str
    bytes_before: int = 0
    bytes_after: int = 0
    vectors: int = 0
    seconds: float = 0.0


def convert(path: Path, dimension: int, precision: str) -> PrecisionReport:
    """Rewrite the vector file in `precision` ("float32" or "float16"); ids, slots,
    metadata and the approximate index stay as they are.

    The new file is written and made durable under SQLite's write lock (writers wait),
    then one commit names it in meta with a new store id, so every reader, in every
    process, loads the store afresh on its next query; the old file is removed
    afterwards (readers that mapped it keep its pages until they let go). float32 to
    float16 rounds each number to 11 significant bits; back to float32 is exact but
    does not bring those bits back."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}.")
    started = time.monotonic()
    with index_db.write_transaction(path) as conn:
        before = index_db.meta_precision(conn)
        source = files.vectors_path(path, before)
        bytes_before = source.stat().st_size if source.exists() else 0
        vectors = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        if before == precision:
            return PrecisionReport(
                "current",
                f"the vectors are already {precision}: nothing to convert",
                before,
                precision,
                bytes_before,
                bytes_before,
                vectors,
            )
        used_slots = index_db.meta_int(conn, "next_slot")
        live = np.zeros(used_slots, dtype=bool)
        live[[slot for (slot,) in conn.execute("SELECT slot FROM records")]] = True
        target = files.vectors_path(path, precision)
        try:
            bytes_after = files.write_converted(source, target, dimension, used_slots, live)
        except ValueError as exc:
            raise VectorStoreError(
                f"The local vector store at {path} cannot be converted to {precision}: {exc}."
            ) from exc
        index_db.put_meta(conn, "precision", precision)
        index_db.set_meta(conn, "store_id", uuid.uuid4().hex)
    source.unlink(missing_ok=True)
    files.sync_directory(path)
    seconds = time.monotonic() - started
    return PrecisionReport(
        "converted",
        f"converted {vectors:,} vectors from {before} to {precision}: vector file "
        f"{size_text(bytes_before)} -> {size_text(bytes_after)} ({seconds:.1f} s)",
        before,
        precision,
        bytes_before,
        bytes_after,
        vectors,
        seconds,
    )


def warn_precision_mismatch(path: Path, stored: str, asked: str) -> None:
    key = (str(path), stored, asked)
    if key in _warned_precisions:
        return
    _warned_precisions.add(key)
    logger.warning(
        "The local vector store at %s keeps its vectors in %s, but %s was asked for "
        "(LOCAL_STORE_PRECISION): it goes on serving %s. To convert it, run "
        "`manage.py vectorstore_compact --precision %s`; or set LOCAL_STORE_PRECISION=%s.",
        path,
        stored,
        asked,
        stored,
        asked,
        stored,
    )


def size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError  # unreachable
