"""One contract, every backend: the same tests run against the local store and Pinecone.

Pinecone is reached through its real SDK over HTTP, against the Pinecone-compatible
server in tests/fakes (this machine has no internet).
"""

import numpy as np
import pytest

from search.vectorstores import DimensionMismatch, VectorRecord
from search.vectorstores.local import LocalVectorStore, approximate
from tests.conftest import pinecone_store

DIMENSION = 16


class CompactingLocalStore(LocalVectorStore):
    """The local store in approximate mode, its index merged after every write, so that
    queries take the index's path (the delta path is what "local" exercises)."""

    def upsert(self, records):
        written = super().upsert(records)
        self.compact()
        return written

    def delete(self, ids):
        super().delete(ids)
        self.compact()


@pytest.fixture(params=["local", "local-approximate", "local-float16-approximate", "pinecone"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalVectorStore(tmp_path / "store", dimension=DIMENSION)
    if request.param.endswith("-approximate"):
        # Filters take faiss's filtered search rather than the exact scan of a rare tag.
        monkeypatch.setattr(approximate.queries, "FILTER_EXACT_MAX_ROWS", 0)
        precision = "float16" if "float16" in request.param else "float32"
        return CompactingLocalStore(
            tmp_path / "store", dimension=DIMENSION, index_mode="approximate", precision=precision
        )
    return pinecone_store(request.getfixturevalue("pinecone"), DIMENSION)


def tolerance(store) -> float:
    """How far a score may be from the float32 cosine: float16 storage rounds each
    component to 11 significant bits."""
    return 1e-3 if getattr(store, "precision", "float32") == "float16" else 1e-5


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def record(id: str, seed: int, tags=()) -> VectorRecord:
    return VectorRecord(id=id, vector=unit(seed), metadata={"tags": list(tags), "title": id})


def test_upsert_then_query_finds_it_first_with_a_cosine_score_of_one(store):
    store.upsert([record("1", 1), record("2", 2), record("3", 3)])
    matches = store.query(unit(2), top_k=3)
    assert matches[0].id == "2"
    assert matches[0].score == pytest.approx(1.0, abs=tolerance(store))
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)


def test_scores_are_cosine_similarities(store):
    store.upsert([record("a", 1), record("b", 2)])
    expected = {"a": float(unit(1) @ unit(5)), "b": float(unit(2) @ unit(5))}
    got = {m.id: m.score for m in store.query(unit(5), top_k=2)}
    assert got == pytest.approx(expected, abs=tolerance(store))


def test_upserting_twice_leaves_one(store):
    store.upsert([record("1", 1)])
    store.upsert([record("1", 7)])
    assert store.count() == 1
    assert store.ids() == {"1"}
    assert store.query(unit(7), top_k=1)[0].score == pytest.approx(1.0, abs=tolerance(store))


def test_delete_removes_it_and_ignores_unknown_ids(store):
    store.upsert([record("1", 1), record("2", 2)])
    store.delete(["1", "never-there"])
    assert store.ids() == {"2"}
    assert [m.id for m in store.query(unit(1), top_k=5)] == ["2"]


def test_filter_by_tag(store):
    store.upsert(
        [
            record("beach", 1, ["beach", "summer"]),
            record("snow", 2, ["winter"]),
            record("both", 3, ["beach"]),
        ]
    )
    ids = {m.id for m in store.query(unit(2), top_k=10, where={"tags": ["beach"]})}
    assert ids == {"beach", "both"}
    ids = {m.id for m in store.query(unit(2), top_k=10, where={"tags": ["winter", "summer"]})}
    assert ids == {"beach", "snow"}


def test_new_metadata_replaces_the_old(store):
    store.upsert([record("1", 1, ["old"])])
    store.upsert([record("1", 1, ["new"])])
    assert store.query(unit(1), top_k=5, where={"tags": ["old"]}) == []
    assert [m.id for m in store.query(unit(1), top_k=5, where={"tags": ["new"]})] == ["1"]


def test_top_k_bounds_results(store):
    store.upsert([record(str(i), i) for i in range(12)])
    assert len(store.query(unit(0), top_k=5)) == 5
    assert len(store.query(unit(0), top_k=50)) == 12


def test_dimension_mismatch_is_refused(store):
    wrong = np.ones(DIMENSION + 1, dtype=np.float32)
    with pytest.raises(DimensionMismatch):
        store.upsert([VectorRecord(id="x", vector=wrong)])
    with pytest.raises(DimensionMismatch):
        store.query(wrong, top_k=1)


def test_an_empty_store_returns_no_results(store):
    assert store.query(unit(1), top_k=10) == []
    assert store.count() == 0
    assert store.ids() == set()


def test_prepare_describes_the_store(store):
    store.upsert([record("1", 1)])
    description = store.prepare()
    assert description["backend"] == store.name
    assert description["dimension"] == DIMENSION
    assert description["count"] == 1


def test_query_many_answers_what_query_answers_for_each_vector(store):
    store.upsert([record(str(i), i, ["even" if i % 2 == 0 else "odd"]) for i in range(12)])
    queries = np.stack([unit(3), unit(10), unit(4)])
    for where in (None, {"tags": ["odd"]}):
        one_by_one = [store.query(query, top_k=5, where=where) for query in queries]
        assert store.query_many(queries, top_k=5, where=where) == one_by_one
    assert [matches[0].id for matches in store.query_many(queries, top_k=1)] == ["3", "10", "4"]


def test_query_many_refuses_anything_but_one_vector_per_row(store):
    with pytest.raises(DimensionMismatch):
        store.query_many(unit(1), top_k=1)
    with pytest.raises(DimensionMismatch):
        store.query_many(np.ones((2, DIMENSION + 1), dtype=np.float32), top_k=1)
