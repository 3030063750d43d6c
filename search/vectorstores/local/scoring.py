"""Scoring a query against a snapshot's rows: one-thread products, blockwise gathers and
the top k."""

from __future__ import annotations

import numpy as np

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
    if query.ndim == 2:
        rows = rows[:, np.newaxis, :]
    return np.vecdot(rows, query)


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
