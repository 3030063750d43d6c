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
    per row of `query`), `rows @ query.T`, one column per query. Scores are float32,
    float16 rows (a float16 store) included: they are converted blockwise.

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
    if rows.dtype != np.float32:
        return _converted_scores(rows, query)
    if query.ndim == 2:
        rows = rows[:, np.newaxis, :]
    return np.vecdot(rows, query)


# float16 rows are converted to float32 this many bytes at a time (64 rows at 2048-d),
# a block that stays in the L2 cache while it is scored.
_CONVERT_BYTES = 512 * 1024


def _converted_scores(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float32 scores of float16 rows: each block converted to float32, then the same dot
    products as float32 rows take.

    numpy's mixed-type `vecdot` converts the rows too, but slowly: its float16 casts are
    scalar code (its baseline build has no F16C), about 1 ns a number. 100,000 x 2048 on
    one thread (a busy 2-core VM): float32 rows 61 ms; float16 rows 450 ms through the
    mixed `vecdot`, 256 ms converted with `astype` per 64 rows, 187 ms with
    `_widen_float16`. `bench/bench_vectorstore.py` ("float16 storage") times the store."""
    block = max(1, _CONVERT_BYTES // (rows.shape[1] * 4))
    scores = np.empty((len(rows), *query.shape[:-1]), dtype=np.float32)
    bits = np.empty((min(block, len(rows)), rows.shape[1]), dtype=np.int32)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        into = _widen_float16(part, bits[: len(part)])
        scores[start : start + len(part)] = np.vecdot(
            into[:, np.newaxis, :] if query.ndim == 2 else into, query
        )
    return scores


_HALF_BITS_MASK = np.uint32(0x8FFF_E000).view(np.int32)  # sign, exponent and mantissa
_HALF_TO_SINGLE_SCALE = np.float32(2.0**112)  # 2 ** (float32's exponent bias - float16's)


def _widen_float16(rows: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """`rows` (float16) as float32, written into `bits` (int32, the same shape), exactly
    what `astype(np.float32)` gives for every finite float16, 2.5 times faster.

    Sign-extending the 16 bits to 32 and shifting them 13 places puts the sign at bit 31
    and exponent and mantissa where float32 keeps them (bits 28-30, copies of the sign,
    are masked off); that float32 is the number divided by 2 ** 112, the difference of the
    two exponent biases, so one multiplication restores it, subnormals and zeros
    included. Each step is an integer or float loop numpy vectorises (64 x 2048: 52 us
    against 129 for `astype`, whose float16 cast is scalar). The store holds no infinity
    or NaN (upsert refuses them), which this would not carry over."""
    if rows.dtype != np.float16:
        np.copyto(bits.view(np.float32), rows)
        return bits.view(np.float32)
    np.copyto(bits, rows.view(np.int16))
    np.left_shift(bits, 13, out=bits)
    np.bitwise_and(bits, _HALF_BITS_MASK, out=bits)
    widened = bits.view(np.float32)
    np.multiply(widened, _HALF_TO_SINGLE_SCALE, out=widened)
    return widened


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
