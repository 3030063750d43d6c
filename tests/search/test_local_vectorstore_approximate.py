"""The local store's approximate mode (faiss HNSW + exact rerank + exact delta), at tiny sizes.

The store contract runs against it too (tests/search/test_vectorstore_contract.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from search.vectorstores.base import VectorRecord
from search.vectorstores.local import LocalVectorStore, approximate
from tests.project_process import project_env, run_manage

DIMENSION = 32
REPO_ROOT = Path(__file__).resolve().parents[2]


def clustered_unit_vectors(count: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Vectors crowded around cluster centres, as image features are (uniform random ones
    say nothing about recall)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMENSION)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, count)]
    vectors += 0.35 * rng.standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def approximate_store(path: Path) -> LocalVectorStore:
    return LocalVectorStore(path, dimension=DIMENSION, index_mode="approximate")


def fill(store: LocalVectorStore, vectors: np.ndarray, tags=lambda i: []) -> None:
    store.upsert(
        VectorRecord(id=str(i), vector=vector, metadata={"tags": tags(i)})
        for i, vector in enumerate(vectors)
    )


def index_in_use(store: LocalVectorStore) -> bool:
    return store._cache.refresh().ann is not None


@pytest.fixture
def store(tmp_path: Path) -> LocalVectorStore:
    return approximate_store(tmp_path / "vectors")


def test_recall_at_10_against_the_exact_scan_is_at_least_095(store, tmp_path):
    vectors = clustered_unit_vectors(3000)
    fill(store, vectors)
    assert store.compact().action == "built"
    assert index_in_use(store)
    exact = LocalVectorStore(store.path, dimension=DIMENSION, index_mode="exact")
    queries = clustered_unit_vectors(60, seed=1)
    found = 0
    for query in queries:
        truth = {match.id for match in exact.query(query, top_k=10)}
        found += len(truth & {match.id for match in store.query(query, top_k=10)})
    assert found / (10 * len(queries)) >= 0.95


def test_scores_are_the_exact_cosines(store):
    vectors = clustered_unit_vectors(500)
    fill(store, vectors)
    store.compact()
    query = clustered_unit_vectors(1, seed=3)[0]
    for match in store.query(query, top_k=5):
        assert match.score == pytest.approx(float(vectors[int(match.id)] @ query), abs=1e-6)


def test_an_upsert_is_found_at_once_by_another_process_before_any_compaction(store):
    fill(store, clustered_unit_vectors(300))
    store.compact()
    fresh = clustered_unit_vectors(1, seed=9)[0]
    store.upsert([VectorRecord(id="fresh", vector=fresh)])
    code = f"""
        import sys
        import numpy as np
        from search.vectorstores.local import LocalVectorStore

        store = LocalVectorStore(sys.argv[1], dimension={DIMENSION}, index_mode="approximate")
        assert store._cache.refresh().ann is not None, "the index is not in use"
        query = np.array({fresh.tolist()}, dtype=np.float32)
        assert store.query(query, top_k=1)[0].id == "fresh"
        store.delete(["0"])
        """
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(store.path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
        timeout=60,
    )
    assert "0" not in {match.id for match in store.query(clustered_unit_vectors(300)[0], 20)}


def test_a_delete_is_never_returned_by_a_stale_index(store):
    vectors = clustered_unit_vectors(400)
    fill(store, vectors)
    store.compact()
    store.delete(["7", "8"])
    assert index_in_use(store)
    for index in (7, 8):
        ids = {match.id for match in store.query(vectors[index], top_k=10)}
        assert ids.isdisjoint({"7", "8"})
        assert len(ids) == 10


def test_a_reused_slot_is_not_answered_with_its_old_vector(store, monkeypatch):
    monkeypatch.setattr("search.vectorstores.local.SLOT_REUSE_GRACE_SECONDS", 0.0)
    vectors = clustered_unit_vectors(200)
    fill(store, vectors)
    store.compact()
    store.delete(["5"])
    other = clustered_unit_vectors(1, seed=5)[0]
    store.upsert([VectorRecord(id="newcomer", vector=other)])
    best = store.query(vectors[5], top_k=3)
    assert "5" not in {match.id for match in best}
    for match in best:
        expected = other if match.id == "newcomer" else vectors[int(match.id)]
        assert match.score == pytest.approx(float(expected @ vectors[5]), abs=1e-6)


def test_reindexing_unchanged_vectors_leaves_nothing_for_the_index_to_catch_up(store):
    vectors = clustered_unit_vectors(100)
    fill(store, vectors)
    store.compact()
    fill(store, vectors)
    assert len(store._cache.refresh().delta) == 0
    assert store.compact().action == "current"


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble_rows"])
def test_a_missing_or_damaged_index_is_answered_exactly_then_rebuilt(
    store, tmp_path, damage, caplog
):
    vectors = clustered_unit_vectors(300)
    fill(store, vectors)
    store.compact()
    stem = store._cache.refresh().ann_index
    index_file = store.path / "ann" / f"{stem}.faiss"
    if damage == "delete":
        index_file.unlink()
    elif damage == "truncate":
        os.truncate(index_file, index_file.stat().st_size // 2)
    else:
        rows_file = store.path / "ann" / f"{stem}.rows"
        rows_file.write_bytes(b"\xff" * rows_file.stat().st_size)

    reader = approximate_store(store.path)  # a process that opens the store afterwards
    with caplog.at_level(logging.WARNING, logger="search.vectorstores.local.approximate"):
        assert reader.query(vectors[11], top_k=1)[0].id == "11"
        assert reader.query(vectors[12], top_k=1)[0].id == "12"
    assert not index_in_use(reader)
    assert len([r for r in caplog.records if "cannot be used" in r.message]) == 1

    assert store.compact().action == "built"
    assert index_in_use(reader)
    assert reader.query(vectors[11], top_k=1)[0].id == "11"


def test_a_rare_tag_still_fills_top_k(store):
    vectors = clustered_unit_vectors(2000)
    fill(store, vectors, tags=lambda i: ["rare"] if i % 100 == 0 else ["common"])
    store.compact()
    matches = store.query(vectors[1], top_k=10, where={"tags": ["rare"]})
    assert len(matches) == 10
    assert all(int(match.id) % 100 == 0 for match in matches)


def test_a_common_tag_takes_the_filtered_index_search_and_fills_top_k(store, monkeypatch):
    monkeypatch.setattr(approximate.queries, "FILTER_EXACT_MAX_ROWS", 100)
    vectors = clustered_unit_vectors(2000)
    fill(store, vectors, tags=lambda i: ["third"] if i % 3 == 0 else [])
    store.compact()
    store.delete(["0", "3"])
    exact = LocalVectorStore(store.path, dimension=DIMENSION, index_mode="exact")
    query = clustered_unit_vectors(1, seed=4)[0]
    matches = store.query(query, top_k=10, where={"tags": ["third"]})
    assert len(matches) == 10
    assert all(int(match.id) % 3 == 0 and match.id not in {"0", "3"} for match in matches)
    truth = {match.id for match in exact.query(query, top_k=10, where={"tags": ["third"]})}
    assert len(truth & {match.id for match in matches}) >= 8


def test_auto_mode_scans_exactly_below_its_threshold(tmp_path):
    store = LocalVectorStore(tmp_path / "v", dimension=DIMENSION, index_mode="auto", exact_below=50)
    fill(store, clustered_unit_vectors(20))
    assert store.compact().action == "below"
    fill(store, clustered_unit_vectors(60))
    assert store.compact().action == "built"
    assert store._index_serves(store._cache.refresh())


def test_exact_mode_removes_the_index(store):
    fill(store, clustered_unit_vectors(50))
    store.compact()
    exact = LocalVectorStore(store.path, dimension=DIMENSION, index_mode="exact")
    assert exact.compact().action == "removed"
    assert [file.name for file in (store.path / "ann").iterdir()] == [".lock"]
    assert not index_in_use(store)
    assert store.query(clustered_unit_vectors(50)[4], top_k=1)[0].id == "4"


def test_vectorstore_compact_builds_merges_and_says_so(tmp_path):
    from search.embedding import DIMENSION as MODEL_DIMENSION

    path = tmp_path / "var" / "vectors"
    local = LocalVectorStore(path, dimension=MODEL_DIMENSION, index_mode="exact")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, MODEL_DIMENSION)).astype(np.float32)
    local.upsert(VectorRecord(id=str(i), vector=v) for i, v in enumerate(vectors))
    env = project_env(
        tmp_path / "var", VECTOR_STORE_PATH=str(path), LOCAL_STORE_INDEX="approximate"
    )

    built = run_manage("vectorstore_compact", env=env)
    assert built.returncode == 0, built.stderr
    assert "built approximate index: 30 vectors" in built.stdout
    checked = run_manage("vectorstore_compact", "--check", "--sample", "20", env=env)
    assert checked.stdout.startswith("index is current")
    assert "recall@10 of the approximate index on 20 of the store's own vectors" in checked.stdout
    refused = run_manage("vectorstore_compact", "--check", "--sample", "0", env=env)
    assert refused.returncode != 0 and "--sample must be at least 1" in refused.stderr

    local.upsert([VectorRecord(id="new", vector=vectors[0] + 1)])
    merged = run_manage("vectorstore_compact", env=env)
    assert "merged 1 changed vectors" in merged.stdout

    env["LOCAL_STORE_INDEX"] = "exact"
    removed = run_manage("vectorstore_compact", "--check", env=env)
    assert "LOCAL_STORE_INDEX=exact: no approximate index kept" in removed.stdout
    assert "no approximate index in use" in removed.stdout


def test_a_store_of_format_1_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old"
    fill(LocalVectorStore(path, dimension=DIMENSION), clustered_unit_vectors(20))
    with sqlite3.connect(path / "index.sqlite3") as conn:
        conn.execute("ALTER TABLE records DROP COLUMN vector_generation")
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'format'")
    store = approximate_store(path)
    assert store.compact().action == "built"
    assert store.query(clustered_unit_vectors(20)[3], top_k=1)[0].id == "3"


def test_the_recall_check_asks_the_stores_own_vectors(store):
    from search.vectorstores.local.approximate.recall import check_recall

    fill(store, clustered_unit_vectors(50))
    assert check_recall(store.path, DIMENSION) is None  # no index yet: nothing to check
    fill(store, clustered_unit_vectors(3000, seed=5))
    store.compact()
    report = check_recall(store.path, DIMENSION, sample=100)
    assert report.queries == 100
    assert report.recall >= 0.95
    assert "recall@10 of the approximate index on 100 of the store's own vectors" in report.message


def test_the_recall_check_finds_an_index_that_answers_badly(store, monkeypatch):
    from search.vectorstores.local.approximate import queries
    from search.vectorstores.local.approximate.recall import check_recall

    fill(store, clustered_unit_vectors(3000))
    store.compact()
    real_search = queries.ApproximateIndex.search
    # An index that proposes far-away rows, as a graph built from other vectors would.
    monkeypatch.setattr(
        queries.ApproximateIndex,
        "search",
        lambda self, query, k, ef, selector=None: real_search(self, -query, k, ef),
    )
    report = check_recall(store.path, DIMENSION, sample=50)
    assert report.recall < 0.5
    assert report.below_90 > 25
    # One that proposes almost nothing: each query falls back to the exact scan.
    monkeypatch.setattr(
        queries.ApproximateIndex,
        "search",
        lambda self, query, k, ef, selector=None: real_search(self, query, 1, ef),
    )
    report = check_recall(store.path, DIMENSION, sample=50)
    assert report.fallbacks == 50
    assert "answered by the exact scan instead" in report.message


def test_a_compaction_killed_after_its_files_before_naming_them_loses_nothing(store, monkeypatch):
    from search.vectorstores.local.approximate import compaction

    vectors = clustered_unit_vectors(400)
    fill(store, vectors[:300])
    assert store.compact().action == "built"
    first_stem = store._cache.refresh().ann_index
    store.upsert(  # ids 300-389 new, ids 5 and 50 with new vectors
        [VectorRecord(id=str(i), vector=vectors[i]) for i in range(300, 390)]
        + [VectorRecord(id=str(i), vector=vectors[390 + n]) for n, i in enumerate((5, 50))]
    )

    class Killed(BaseException):
        pass

    real_write = compaction.write_generation

    def write_then_die(*args, **kwargs):
        real_write(*args, **kwargs)
        raise Killed  # the process dies before the one SQLite write that names the files

    monkeypatch.setattr(compaction, "write_generation", write_then_die)
    with pytest.raises(Killed):
        store.compact()
    monkeypatch.undo()

    # The old generation still serves, and the writes since are answered from the delta.
    reader = approximate_store(store.path)
    assert reader._cache.refresh().ann_index == first_stem
    assert reader.query(vectors[390], top_k=1)[0].id == "5"
    assert reader.query(vectors[391], top_k=1)[0].id == "50"
    assert reader.query(vectors[5], top_k=1)[0].id != "5"  # its old vector is never answered
    assert reader.query(vectors[350], top_k=1)[0].id == "350"
    assert reader.query(vectors[200], top_k=1)[0].id == "200"
    # The next compaction merges and removes the orphaned files.
    assert store.compact().action == "merged"
    stems = {file.name.split(".")[0] for file in (store.path / "ann").iterdir()}
    assert stems == {"", first_stem, store._cache.refresh().ann_index}  # "" is ".lock"


def test_a_fresh_process_maps_the_index_instead_of_copying_it(tmp_path):
    """What makes web processes share one copy: the index file's pages are mapped, not
    read into each process's private memory."""
    dimension = 2048
    path = tmp_path / "vectors"
    store = LocalVectorStore(path, dimension=dimension, index_mode="approximate")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6000, dimension)).astype(np.float32)
    store.upsert(VectorRecord(id=str(i), vector=v) for i, v in enumerate(vectors))
    store.compact()
    index_bytes = sum(file.stat().st_size for file in (path / "ann").glob("*.faiss"))
    script = textwrap.dedent(
        f"""
        import json, sys
        import faiss  # its libraries are not the index
        import numpy as np
        from search.vectorstores.local import LocalVectorStore

        def anonymous_kib():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

        queries = np.random.default_rng(1).standard_normal((200, {dimension})).astype(np.float32)
        exact = LocalVectorStore(sys.argv[1], dimension={dimension}, index_mode="exact")
        for query in queries:  # the same work without the index: caches, buffers
            exact.query(query, top_k=10)
        before = anonymous_kib()
        store = LocalVectorStore(sys.argv[1], dimension={dimension}, index_mode="approximate")
        for query in queries:
            store.query(query, top_k=10)
        assert store._cache.refresh().ann is not None, "the index is not in use"
        print(json.dumps({{"grew_kib": anonymous_kib() - before}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    grew = json.loads(run.stdout)["grew_kib"] * 1024
    assert index_bytes > 10 * 2**20
    assert grew < index_bytes / 4, (grew, index_bytes)


def said(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "search.vectorstores.local.snapshot"
    ]


def test_a_delta_the_merges_do_not_keep_up_with_is_said_once(store, monkeypatch, caplog):
    from search.vectorstores.local import snapshot

    monkeypatch.setattr(snapshot, "DELTA_WARNING_ROWS", 50)
    vectors = clustered_unit_vectors(300)
    fill(store, vectors[:100])
    store.compact()
    with caplog.at_level(logging.WARNING, logger="search.vectorstores.local.snapshot"):
        store.upsert(VectorRecord(id=str(i), vector=vectors[i]) for i in range(100, 140))
        store.query(vectors[0], top_k=1)
        assert not said(caplog)  # 40 rows: below the threshold
        store.upsert(VectorRecord(id=str(i), vector=vectors[i]) for i in range(140, 200))
        store.query(vectors[0], top_k=1)
        store.upsert([VectorRecord(id="200", vector=vectors[200])])
        store.query(vectors[0], top_k=1)
    warnings = said(caplog)
    assert len(warnings) == 1
    assert "100 vectors of the local store" in warnings[0]
    assert "vectorstore_compact" in warnings[0]
