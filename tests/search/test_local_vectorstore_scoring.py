"""How LocalVectorStore's exact scan uses the CPU: no Django and no database needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from search.vectorstores.base import VectorRecord
from search.vectorstores.local import LocalVectorStore
from tests.conftest import cpu_burnt_after

# Long enough to cover a BLAS worker's spin after a product (about 2**28 cycles).
IDLE_SECONDS = 0.15


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="with one core a BLAS library starts no worker threads"
)
# A filter keeping a quarter of the records takes the gathering path.
@pytest.mark.parametrize("tags", [None, {"tag": ["x"]}], ids=["full scan", "gathered rows"])
@pytest.mark.parametrize("batch", [False, True], ids=["query", "query_many"])
def test_a_query_leaves_no_thread_spinning_after_it_returns(
    tmp_path: Path, tags: dict | None, batch: bool
) -> None:
    # numpy's `@` hands a product this size to BLAS, whose worker threads spin for about
    # 100 ms of CPU before they sleep: on a 2-core machine, taken from the model's pool.
    rng = np.random.default_rng(3)
    dimension, count = 512, 6000  # the gathered quarter: 1500 x 512, still handed to BLAS
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = LocalVectorStore(tmp_path, dimension=dimension)
    store.upsert(
        VectorRecord(id=f"v{i}", vector=vectors[i], metadata={"tag": "y" if i % 4 else "x"})
        for i in range(count)
    )

    def best_matches_of_the_first_vector() -> list:
        if batch:  # 16 queries, as an indexing batch sends: `@` would hand these to BLAS too
            return store.query_many(vectors[:16], top_k=10, where=tags)[0]
        return store.query(vectors[0], top_k=10, where=tags)

    burnt = min(cpu_burnt_after(best_matches_of_the_first_vector, IDLE_SECONDS))

    assert best_matches_of_the_first_vector()[0].id == "v0"
    assert burnt < 0.01, f"{burnt * 1e3:.0f} ms of CPU burnt after the query returned"


@pytest.mark.parametrize("batch", [False, True], ids=["query", "query_many"])
def test_a_large_scan_is_shared_between_the_cores_and_scores_exactly_as_one_thread(
    monkeypatch, batch: bool
) -> None:
    import threading

    from search.vectorstores.local import scoring

    rng = np.random.default_rng(5)
    rows = rng.standard_normal((40_000, 64), dtype=np.float32)  # past _PARALLEL_MIN_ROWS
    query = rows[:16] if batch else rows[0]
    threads_used = set()
    score_part = scoring._score_part

    def noting_the_thread(*args):
        threads_used.add(threading.current_thread().name)
        return score_part(*args)

    monkeypatch.setattr(scoring, "_score_part", noting_the_thread)
    monkeypatch.setattr(scoring, "process_share_of_cores", lambda: 2)
    shared = scoring.scores_of(rows, query)
    assert len(threads_used) == 2 and any(n.startswith("store-scan") for n in threads_used)
    assert np.array_equal(shared, scoring._scores_here(rows, query))  # bit for bit

    threads_used.clear()
    monkeypatch.setattr(scoring, "process_share_of_cores", lambda: 1)  # a worker's share
    assert np.array_equal(scoring.scores_of(rows, query), shared)
    assert threads_used == set()  # one core: scored on the calling thread, in one go


def test_a_large_scan_leaves_no_thread_spinning_after_it_returns(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    dimension, count = 64, 40_000
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = LocalVectorStore(tmp_path, dimension=dimension)
    store.upsert(VectorRecord(id=f"v{i}", vector=vectors[i]) for i in range(count))
    burnt = min(cpu_burnt_after(lambda: store.query(vectors[0], top_k=10), IDLE_SECONDS))
    assert store.query(vectors[0], top_k=1)[0].id == "v0"
    assert burnt < 0.01, f"{burnt * 1e3:.0f} ms of CPU burnt after the query returned"
