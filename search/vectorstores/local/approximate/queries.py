"""Answering a query from an approximate index: its candidates plus the exact delta, every
score the exact cosine read from the vector file."""

from __future__ import annotations

import numpy as np

from search.vectorstores.local.approximate.index_files import ApproximateIndex
from search.vectorstores.local.scoring import gathered_scores

# Measured at 100,000 and 300,000 synthetic 2048-d features (docs/design/approximate-index.md):
# M 32 and efConstruction 128 reach recall@10 >= 0.98 at efSearch 24-48, a quarter of the
# float32 memory; efSearch 96 is where the worst query's recall stopped being 0 (>= 0.9),
# and with an exact rerank of 40 candidates recall was 0.99-1.0.
EF_SEARCH = 96
EF_SEARCH_MAX = 2048
CANDIDATES_MIN = 40  # index candidates re-scored exactly: max(top_k * 4, this)
# A filter keeping this many rows or fewer is answered by an exact scan of its rows: 10,000
# gathered rows scored in 7.6 ms p50 (one thread), while faiss's filtered HNSW search
# needed efSearch 1024 and 4.4-7.2 ms for recall 0.91-0.93 at a 1% filter. Read at each
# query from this module, so tests can lower it.
FILTER_EXACT_MAX_ROWS = 20_000

_NO_SLOTS = np.empty(0, dtype=np.intp)


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
