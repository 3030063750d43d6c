"""How LocalVectorStore's exact scan uses the CPU: no Django and no database needed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from search.vectorstores.base import VectorRecord
from search.vectorstores.local import LocalVectorStore

# Long enough to cover a BLAS worker's spin after a product (about 2**28 cycles).
IDLE_SECONDS = 0.15


def cpu_burnt_after(run) -> float:
    """The least CPU time the process burns while it sleeps just after `run()`, of 3 tries."""
    burnt = []
    for _ in range(3):
        time.sleep(IDLE_SECONDS)  # whatever ran before has gone quiet
        run()
        began = time.process_time()
        time.sleep(IDLE_SECONDS)
        burnt.append(time.process_time() - began)
    return min(burnt)


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="with one core a BLAS library starts no worker threads"
)
# A filter keeping a quarter of the records takes the gathering path.
@pytest.mark.parametrize("tags", [None, {"tag": ["x"]}], ids=["full scan", "gathered rows"])
def test_a_query_leaves_no_thread_spinning_after_it_returns(
    tmp_path: Path, tags: dict | None
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
    query = vectors[0]

    burnt = cpu_burnt_after(lambda: store.query(query, top_k=10, filter=tags))

    assert store.query(query, top_k=1, filter=tags)[0].id == "v0"
    assert burnt < 0.01, f"{burnt * 1e3:.0f} ms of CPU burnt after the query returned"
