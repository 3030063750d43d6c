"""How well the approximate index answers on this store's own vectors: what
`manage.py vectorstore_compact --check` prints.

Synthetic vectors (the benchmark's) only suggest how an index does on a catalog; this asks
the catalog itself. A sample of stored vectors is searched, each one's own record left
out, through the index (as queries are answered) and by the exact scan, and recall@k is
the share of the exact answers the index found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.vectorstores.local.approximate.queries import scored
from search.vectorstores.local.scoring import scores_of, top_indices

# Queries scored exactly in one pass over the rows (`scores_of` takes a batch).
_EXACT_BATCH = 32


@dataclass(frozen=True)
class RecallReport:
    queries: int
    top_k: int
    recall: float  # mean share of the exact top_k the index returned
    lowest: float  # the worst query's
    below_90: int  # queries whose recall was under 0.9
    fallbacks: int  # queries the index gave too few candidates for: the exact scan answered
    seconds: float
    message: str


def check_recall(
    path: Path, dimension: int, *, sample: int = 200, top_k: int = 10, seed: int = 0
) -> RecallReport | None:
    """Recall@`top_k` of the index on `sample` of the store's vectors; None when the store
    has no usable approximate index (or too few vectors to ask about)."""
    from search.vectorstores.local.snapshot import ReadCache

    snapshot = ReadCache(path, dimension, use_index=True).refresh()
    live = np.flatnonzero(snapshot.live)
    if snapshot.ann is None or len(live) <= top_k:
        return None
    started = time.monotonic()
    chosen = np.random.default_rng(seed).choice(live, size=min(sample, len(live)), replace=False)
    queries = np.asarray(snapshot.matrix[np.sort(chosen)], dtype=np.float32)
    exact = _exact_answers(snapshot, np.sort(chosen), queries, top_k)
    recalls, fallbacks = [], 0
    for slot, query, wanted in zip(np.sort(chosen), queries, exact, strict=True):
        answer = scored(snapshot, None, query, top_k + 1)
        if answer is None:  # too few valid candidates: such a query scans exactly
            fallbacks += 1
            recalls.append(1.0)
            continue
        slots, scores = answer
        found = [s for s in slots[top_indices(scores, top_k + 1)] if s != slot][:top_k]
        recalls.append(len(set(found) & set(wanted)) / len(wanted))
    seconds = time.monotonic() - started
    recall, lowest = float(np.mean(recalls)), float(np.min(recalls))
    below = sum(r < 0.9 for r in recalls)
    message = (
        f"recall@{top_k} of the approximate index on {len(recalls)} of the store's own "
        f"vectors (each one's own record left out), against the exact scan: {recall:.3f} "
        f"(lowest {lowest:.1f}; {below} below 0.9), {seconds:.1f} s"
    )
    if fallbacks:
        message += (
            f"; {fallbacks} answered by the exact scan instead (the index gave too few "
            "candidates): rebuild it with --rebuild"
        )
    return RecallReport(len(recalls), top_k, recall, lowest, below, fallbacks, seconds, message)


def _exact_answers(snapshot, slots: np.ndarray, queries: np.ndarray, top_k: int) -> list:
    """Each query's exact top `top_k` live slots, its own slot left out."""
    lo, hi = snapshot.lo, snapshot.hi
    dead = ~snapshot.live[lo:hi]
    answers = []
    for start in range(0, len(queries), _EXACT_BATCH):
        batch = queries[start : start + _EXACT_BATCH]
        scores = scores_of(snapshot.matrix[lo:hi], batch)  # one column per query
        scores[dead] = -np.inf
        for column, slot in zip(scores.T, slots[start : start + _EXACT_BATCH], strict=True):
            column = column.copy()
            column[slot - lo] = -np.inf
            answers.append([lo + int(i) for i in top_indices(column, top_k)])
    return answers
