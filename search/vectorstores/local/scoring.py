"""Scoring a query against a snapshot's rows: products that wake no math library's
threads, shared between this process's cores on large scans; blockwise gathers; the top k."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from search.embedding.options import process_share_of_cores

# Rows gathered per block when a filter keeps few records (see `gathered_scores`).
_GATHER_BYTES = 4 * 1024 * 1024


def scores_of(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`rows @ query`, computed on the calling thread alone; for a batch of queries (one
    per row of `query`), `rows @ query.T`, one column per query.

    numpy's `@` hands a product this large to BLAS, which wakes its worker threads. The
    scan is bound by memory bandwidth, so on a 2-core machine they shorten it little
    (100,000 x 2048 float32: 17 ms against 22 ms), and then spin for about 100 ms of CPU
    before they sleep, taken from the model's inference pool: the embedding after such a
    scan took 30 ms instead of 19. `np.vecdot` takes one dot product per row on this
    thread and leaves nothing running (`bench/bench_exact_scoring.py` measures both).

    A batch broadcasts each row against every query: numpy's loop takes a row, scores it
    against all the queries while it is in the L1 cache, then moves on, so the rows are
    read from memory once for the batch (16 queries at 100,000 rows: 315 ms against 970
    for 16 lone queries, `bench/bench_vectorstore.py`). Each score is the very dot product
    a lone query takes, so a batch ranks exactly as its queries one at a time. A matmul
    of blocks small enough for OpenBLAS to keep on one thread (8 rows for 16 queries) was
    barely faster (310 ms against 330), rounds differently, and stays on one thread only
    while that undocumented threshold holds; larger blocks woke the spinning threads.
    """
    if len(rows) < _PARALLEL_MIN_ROWS:  # before counting cores: that reads /sys
        return _scores_here(rows, query)
    threads = process_share_of_cores()
    if threads == 1:
        return _scores_here(rows, query)
    # A large scan is shared between the process's cores in contiguous parts: one core's
    # memory bandwidth does not saturate the machine's (100,000 rows on 2 cores: 51 ms on
    # one thread, 30 on two). Python threads that wait sleep; nothing spins afterwards,
    # and every score is the same dot product, so the ranking does not change.
    scores = np.empty((len(rows), *query.shape[:-1]), dtype=np.float32)
    bounds = np.linspace(0, len(rows), threads + 1).astype(int)
    helpers = [
        _scan_pool(threads - 1).submit(_score_part, rows, query, scores, lo, hi)
        for lo, hi in itertools.pairwise(bounds[1:])
    ]
    _score_part(rows, query, scores, bounds[0], bounds[1])
    for helper in helpers:
        helper.result()
    return scores


# Below this many rows a scan stays on the calling thread: handing parts to other threads
# would cost about what it saves. Parts are scored in blocks that stay in the caches.
_PARALLEL_MIN_ROWS = 16_384
_BLOCK_ROWS = 8_192
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _scores_here(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    if query.ndim == 2:
        rows = rows[:, np.newaxis, :]
    return np.vecdot(rows, query)


def _score_part(rows, query, scores, lo: int, hi: int) -> None:
    for start in range(lo, hi, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, hi)
        scores[start:stop] = _scores_here(rows[start:stop], query)


def _scan_pool(workers: int) -> ThreadPoolExecutor:
    """The process's scan helpers, started on first use (after any fork)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store-scan")
            _pool_workers = workers
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child has the parent's pool object but none of its threads.
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def gathered_scores(matrix: np.ndarray, slots: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`matrix[slots] @ query` (or `@ query.T` for a batch, as `scores_of`), gathered a
    few megabytes at a time.

    One big gather would fault in a fresh buffer as large as the rows it copies, which
    costs more than the product; small blocks reuse the same warm memory.
    """
    block = max(1, _GATHER_BYTES // (matrix.shape[1] * matrix.itemsize))
    scores = np.empty((len(slots), *query.shape[:-1]), dtype=np.float32)
    for start in range(0, len(slots), block):
        scores[start : start + block] = scores_of(matrix[slots[start : start + block]], query)
    return scores


def top_indices(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the `top_k` highest finite scores, best first."""
    k = min(top_k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return best[np.isfinite(scores[best])]
