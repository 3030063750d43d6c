"""LocalVectorStore: plain Python and numpy, no Django and no database needed."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from search.vectorstores import local
from search.vectorstores.base import DimensionMismatch, VectorRecord, VectorStoreError
from search.vectorstores.local import LocalVectorStore

DIMENSION = 8
REPO_ROOT = Path(__file__).resolve().parents[2]


def basis(index: int, dimension: int = DIMENSION) -> np.ndarray:
    vector = np.zeros(dimension, dtype=np.float32)
    vector[index] = 1.0
    return vector


def record(id_: str, vector: np.ndarray, **metadata: object) -> VectorRecord:
    return VectorRecord(id=id_, vector=vector, metadata=metadata)


def random_unit_vectors(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def in_another_process(store_path: Path, code: str) -> None:
    """Run `code` in a fresh interpreter, with `store` open on the same directory."""
    prelude = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from search.vectorstores.base import VectorRecord
        from search.vectorstores.local import LocalVectorStore

        def basis(index):
            vector = np.zeros({DIMENSION}, dtype=np.float32)
            vector[index] = 1.0
            return vector

        store = LocalVectorStore(sys.argv[1], dimension={DIMENSION})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), str(store_path)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=60,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalVectorStore:
    return LocalVectorStore(tmp_path / "vectors", dimension=DIMENSION)


def test_upsert_then_query_finds_it(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0)), record("b", basis(1))])

    matches = store.query(basis(1), top_k=1)

    assert [match.id for match in matches] == ["b"]
    assert matches[0].score == pytest.approx(1.0)


def test_results_come_best_first_with_cosine_scores(store: LocalVectorStore) -> None:
    halfway = (basis(0) + basis(1)) / np.sqrt(2)
    store.upsert([record("far", basis(2)), record("near", basis(0)), record("mid", halfway)])

    matches = store.query(basis(0), top_k=3)

    assert [match.id for match in matches] == ["near", "mid", "far"]
    assert [match.score for match in matches] == pytest.approx([1.0, 1 / np.sqrt(2), 0.0])


def test_upserting_twice_leaves_one_record(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0))])
    store.upsert([record("a", basis(0))])

    assert store.count() == 1
    assert [match.id for match in store.query(basis(0), top_k=10)] == ["a"]


def test_upserting_a_new_vector_replaces_the_old_one(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0))])
    store.query(basis(0), top_k=1)  # warm the cache, so the replacement must refresh it

    store.upsert([record("a", basis(3))])

    assert store.count() == 1
    assert store.query(basis(3), top_k=1)[0].score == pytest.approx(1.0)
    assert store.query(basis(0), top_k=1)[0].score == pytest.approx(0.0)


def test_the_last_record_wins_when_one_call_names_an_id_twice(
    store: LocalVectorStore,
) -> None:
    written = store.upsert([record("a", basis(0)), record("a", basis(1))])

    assert written == 1
    assert store.query(basis(1), top_k=1)[0].score == pytest.approx(1.0)


def test_delete_removes_it(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0)), record("b", basis(1))])
    store.query(basis(0), top_k=2)

    store.delete(["a"])

    assert [match.id for match in store.query(basis(0), top_k=2)] == ["b"]
    assert store.ids() == {"b"}


def test_deleting_an_unknown_id_is_ignored(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0))])

    store.delete(["nobody", "a", "a"])

    assert store.count() == 0


def test_filter_by_tag(store: LocalVectorStore) -> None:
    store.upsert(
        [
            record("sea", basis(0), tags=["beach", "water"]),
            record("sand", basis(1), tags=["beach"]),
            record("peak", basis(0), tags=["mountain"]),
        ]
    )

    matches = store.query(basis(0), top_k=10, where={"tags": ["beach"]})

    assert [match.id for match in matches] == ["sea", "sand"]


def test_filter_matches_any_of_the_given_values(store: LocalVectorStore) -> None:
    store.upsert(
        [
            record("sea", basis(0), tags=["beach"]),
            record("peak", basis(1), tags=["mountain"]),
            record("town", basis(2), tags=["city"]),
        ]
    )

    matches = store.query(basis(0), top_k=10, where={"tags": ["beach", "mountain"]})

    assert {match.id for match in matches} == {"sea", "peak"}


def test_filter_needs_every_field_to_match(store: LocalVectorStore) -> None:
    store.upsert(
        [
            record("a", basis(0), tags=["beach"], source="curated"),
            record("b", basis(0), tags=["beach"], source="imported"),
            record("c", basis(0), tags=["city"], source="curated"),
        ]
    )

    matches = store.query(basis(0), top_k=10, where={"tags": ["beach"], "source": ["curated"]})

    assert [match.id for match in matches] == ["a"]


def test_a_filter_nothing_passes_returns_no_results(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0), tags=["beach"])])

    assert store.query(basis(0), top_k=5, where={"tags": ["snow"]}) == []
    assert store.query(basis(0), top_k=5, where={"colour": ["red"]}) == []


def test_changed_metadata_changes_what_a_filter_keeps(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0), tags=["beach"])])
    store.query(basis(0), top_k=1, where={"tags": ["beach"]})

    store.upsert([record("a", basis(0), tags=["city"])])

    assert store.query(basis(0), top_k=1, where={"tags": ["beach"]}) == []
    assert [m.id for m in store.query(basis(0), top_k=1, where={"tags": ["city"]})] == ["a"]


def test_top_k_bounds_results(store: LocalVectorStore) -> None:
    store.upsert([record(f"r{i}", basis(i)) for i in range(DIMENSION)])

    assert len(store.query(basis(0), top_k=3)) == 3
    assert len(store.query(basis(0), top_k=100)) == DIMENSION
    assert store.query(basis(0), top_k=0) == []


def test_dimension_mismatch_is_refused(store: LocalVectorStore) -> None:
    with pytest.raises(DimensionMismatch):
        store.upsert([record("a", np.ones(DIMENSION + 1, dtype=np.float32))])
    with pytest.raises(DimensionMismatch):
        store.query(np.ones(DIMENSION - 1, dtype=np.float32), top_k=1)
    with pytest.raises(DimensionMismatch):
        store.query(np.ones((1, DIMENSION), dtype=np.float32), top_k=1)

    assert store.count() == 0


def test_reopening_with_another_dimension_is_refused(tmp_path: Path) -> None:
    LocalVectorStore(tmp_path, dimension=DIMENSION)

    with pytest.raises(DimensionMismatch, match=f"holds {DIMENSION}-dimensional"):
        LocalVectorStore(tmp_path, dimension=DIMENSION * 2)


def test_a_vector_with_nan_is_refused(store: LocalVectorStore) -> None:
    vector = basis(0)
    vector[1] = np.nan

    with pytest.raises(VectorStoreError):
        store.upsert([record("a", vector)])

    assert store.count() == 0


def test_empty_store_returns_no_results(store: LocalVectorStore) -> None:
    assert store.query(basis(0), top_k=10) == []
    assert store.count() == 0
    assert store.ids() == set()


def test_a_store_emptied_by_deletes_returns_no_results(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0))])
    store.delete(["a"])

    assert store.query(basis(0), top_k=10) == []


def test_it_persists_across_reopen(tmp_path: Path) -> None:
    first = LocalVectorStore(tmp_path, dimension=DIMENSION)
    first.upsert([record("a", basis(0), tags=["beach"]), record("b", basis(1))])
    del first

    reopened = LocalVectorStore(tmp_path, dimension=DIMENSION)

    assert reopened.ids() == {"a", "b"}
    matches = reopened.query(basis(0), top_k=1, where={"tags": ["beach"]})
    assert [match.id for match in matches] == ["a"]


def test_a_vector_upserted_by_another_process_is_found_on_the_next_query(
    store: LocalVectorStore,
) -> None:
    store.upsert([record("mine", basis(0))])
    assert [match.id for match in store.query(basis(1), top_k=1)] == ["mine"]

    in_another_process(store.path, "store.upsert([VectorRecord('theirs', basis(1))])")

    assert store.query(basis(1), top_k=1)[0].id == "theirs"


def test_a_vector_deleted_by_another_process_disappears(
    store: LocalVectorStore,
) -> None:
    store.upsert([record("a", basis(0)), record("b", basis(1))])
    assert [match.id for match in store.query(basis(0), top_k=1)] == ["a"]

    in_another_process(store.path, "store.delete(['a'])")

    assert [match.id for match in store.query(basis(0), top_k=2)] == ["b"]


def test_a_reused_slot_is_read_as_its_new_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No grace period, so the writer reuses the deleted record's slot at once; the
    # reader's cached slot -> id map must follow.
    monkeypatch.setattr(local, "SLOT_REUSE_GRACE_SECONDS", 0.0)
    reader = LocalVectorStore(tmp_path, dimension=DIMENSION)
    writer = LocalVectorStore(tmp_path, dimension=DIMENSION)
    writer.upsert([record("old", basis(0), tags=["beach"])])
    assert [match.id for match in reader.query(basis(0), top_k=1)] == ["old"]

    writer.delete(["old"])
    writer.upsert([record("new", basis(1), tags=["city"])])

    assert (tmp_path / "vectors.f32").stat().st_size == local._GROWTH_SLOTS * DIMENSION * 4
    assert [(m.id, round(m.score, 3)) for m in reader.query(basis(1), top_k=5)] == [("new", 1.0)]
    assert reader.query(basis(1), top_k=5, where={"tags": ["beach"]}) == []


def test_threads_can_query_while_another_thread_writes(store: LocalVectorStore) -> None:
    store.upsert([record("seed", basis(0))])
    failures: list[BaseException] = []

    def keep_querying() -> None:
        try:
            for _ in range(40):
                matches = store.query(basis(0), top_k=3)
                assert matches[0].id == "seed"
                assert len({match.id for match in matches}) == len(matches)
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=keep_querying) for _ in range(4)]
    for reader in readers:
        reader.start()
    for index in range(40):
        store.upsert([record(f"w{index}", basis(1 + index % (DIMENSION - 1)))])
    for reader in readers:
        reader.join()

    assert failures == []
    assert store.count() == 41


def _write_and_query_in_forked_child(
    store: LocalVectorStore, results: multiprocessing.Queue
) -> None:
    store.upsert([record("from-child", basis(2))])
    results.put([match.id for match in store.query(basis(2), top_k=1)])


@pytest.mark.skipif(sys.platform != "linux", reason="Celery prefork forks on Linux")
def test_a_forked_child_keeps_working_with_the_parents_store(
    store: LocalVectorStore,
) -> None:
    store.upsert([record("a", basis(0))])
    store.query(basis(0), top_k=1)  # the child inherits a warm cache and its mapping
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    child = context.Process(target=_write_and_query_in_forked_child, args=(store, results))
    child.start()
    found = results.get(timeout=30)
    child.join(timeout=30)

    assert child.exitcode == 0
    assert found == ["from-child"]
    assert store.query(basis(2), top_k=1)[0].id == "from-child"


def test_results_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    dimension, count = 64, 3000
    vectors = random_unit_vectors(rng, count, dimension)
    colours = rng.choice(["red", "green", "blue", "grey", "pink"], size=count)
    store = LocalVectorStore(tmp_path, dimension=dimension)
    for start in range(0, count, 1000):
        store.upsert(
            record(f"v{i}", vectors[i], colour=str(colours[i])) for i in range(start, start + 1000)
        )
    store.delete(f"v{i}" for i in range(0, count, 10))
    alive = np.array([i % 10 != 0 for i in range(count)])

    for query in random_unit_vectors(rng, 5, dimension):
        scores = np.where(alive, vectors @ query, -np.inf)
        expected = np.argsort(-scores)[:10]
        matches = store.query(query, top_k=10)
        assert [match.id for match in matches] == [f"v{i}" for i in expected]
        assert [match.score for match in matches] == pytest.approx(scores[expected])

        # A rare colour takes the gathering path, common ones the full scan.
        for kept in (["red"], ["red", "green", "blue"]):
            filtered = np.where(np.isin(colours, kept), scores, -np.inf)
            expected = np.argsort(-filtered)[:10]
            matches = store.query(query, top_k=10, where={"colour": kept})
            assert [match.id for match in matches] == [f"v{i}" for i in expected]
            assert [match.score for match in matches] == pytest.approx(filtered[expected])


def test_query_many_answers_exactly_what_query_answers_for_each_vector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three passes over the rows (3 + 3 + 1 queries), so passes line up with the queries.
    monkeypatch.setattr("search.vectorstores.local.store.QUERIES_PER_PASS", 3)
    rng = np.random.default_rng(11)
    dimension, count = 64, 3000
    vectors = random_unit_vectors(rng, count, dimension)
    vectors[1000:1040] = vectors[0]  # ties: 41 records share a vector, more than a top k
    colours = rng.choice(["red", "green", "blue", "grey", "pink"], size=count)
    store = LocalVectorStore(tmp_path, dimension=dimension)
    store.upsert(record(f"v{i}", vectors[i], colour=str(colours[i])) for i in range(count))
    store.delete(f"v{i}" for i in range(0, count, 10))  # dead slots inside the scan
    queries = np.concatenate([vectors[[0, 1, 5]], random_unit_vectors(rng, 4, dimension)])

    # No filter, a rare colour (gathered rows), common ones (full scan, masked), none kept.
    for where in (None, {"colour": ["red"]}, {"colour": ["red", "green", "blue"]}, {"x": ["y"]}):
        for top_k in (1, 10, count + 5):
            one_by_one = [store.query(query, top_k=top_k, where=where) for query in queries]
            assert store.query_many(queries, top_k=top_k, where=where) == one_by_one
    assert len({match.score for match in store.query(queries[0], top_k=10)}) == 1  # a tie


def test_query_many_on_an_empty_store_or_with_nothing_asked(store: LocalVectorStore) -> None:
    queries = np.stack([basis(0), basis(1)])
    assert store.query_many(queries, top_k=5) == [[], []]

    store.upsert([record("a", basis(0)), record("b", basis(1))])
    assert store.query_many(queries, top_k=0) == [[], []]
    assert store.query_many(np.empty((0, DIMENSION), dtype=np.float32), top_k=5) == []
    assert [[m.id for m in matches] for matches in store.query_many(queries, top_k=5)] == [
        ["a", "b"],
        ["b", "a"],
    ]


def test_a_snapshot_held_across_writes_still_names_what_it_scored(store: LocalVectorStore) -> None:
    """Refreshes write ids into free slots in place (copying a million ids took 50 ms);
    a query still holding the snapshot before a delete and an upsert reads the ids it saw."""
    store.upsert([record("a", basis(0)), record("b", basis(1))])
    before = store._cache.refresh()
    slot_a = int(np.flatnonzero(before.slot_ids == "a")[0])
    store.delete(["a"])
    store.upsert([record("c", basis(2)), record("b", basis(3))])  # b moves to a new slot
    after = store._cache.refresh()
    assert before.live[slot_a] and before.slot_ids[slot_a] == "a"
    assert not after.live[slot_a]
    assert sorted(after.slot_ids[after.live]) == ["b", "c"]
    assert sorted(before.slot_ids[before.live]) == ["a", "b"]
    assert store.query(basis(3), top_k=1)[0].id == "b"
    assert "a" not in {m.id for m in store.query(basis(0), top_k=3)}
