"""LocalVectorStore in float16 (LOCAL_STORE_PRECISION): the same behaviours as float32,
half the vector file, and conversion between the two while readers and writers go on."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from search.vectorstores.base import VectorRecord, VectorStoreError
from search.vectorstores.local import LocalVectorStore, scoring

# The float32 store's behaviours, run again below against a float16 `store` (they use
# basis vectors, which float16 holds exactly, so their exact scores still hold).
from tests.search.test_local_vectorstore import (  # noqa: F401
    DIMENSION,
    basis,
    in_another_process,
    random_unit_vectors,
    record,
    test_a_filter_nothing_passes_returns_no_results,
    test_a_store_emptied_by_deletes_returns_no_results,
    test_a_vector_deleted_by_another_process_disappears,
    test_a_vector_upserted_by_another_process_is_found_on_the_next_query,
    test_a_vector_with_nan_is_refused,
    test_changed_metadata_changes_what_a_filter_keeps,
    test_delete_removes_it,
    test_deleting_an_unknown_id_is_ignored,
    test_dimension_mismatch_is_refused,
    test_empty_store_returns_no_results,
    test_filter_by_tag,
    test_filter_matches_any_of_the_given_values,
    test_filter_needs_every_field_to_match,
    test_query_many_on_an_empty_store_or_with_nothing_asked,
    test_the_last_record_wins_when_one_call_names_an_id_twice,
    test_threads_can_query_while_another_thread_writes,
    test_top_k_bounds_results,
    test_upsert_then_query_finds_it,
    test_upserting_a_new_vector_replaces_the_old_one,
    test_upserting_twice_leaves_one_record,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalVectorStore:
    return LocalVectorStore(tmp_path / "vectors", dimension=DIMENSION, precision="float16")


def float16_store(path: Path, dimension: int = DIMENSION) -> LocalVectorStore:
    return LocalVectorStore(path, dimension=dimension, precision="float16")


def fill(store: LocalVectorStore, vectors: np.ndarray) -> None:
    store.upsert(
        record(f"v{i}", vector, colour=["red", "green", "blue"][i % 3], n=i)
        for i, vector in enumerate(vectors)
    )


def answers(store: LocalVectorStore, queries: np.ndarray, where=None) -> list[list[str]]:
    return [[m.id for m in store.query(q, top_k=10, where=where)] for q in queries]


def meta(path: Path, key: str) -> str | None:
    with sqlite3.connect(path / "index.sqlite3") as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def slot_of(path: Path, id_: str) -> int:
    with sqlite3.connect(path / "index.sqlite3") as conn:
        return conn.execute("SELECT slot FROM records WHERE id = ?", (id_,)).fetchone()[0]


# Storage


def test_a_float16_store_keeps_half_the_bytes_in_vectors_f16(tmp_path: Path) -> None:
    vectors = random_unit_vectors(np.random.default_rng(0), 100, 64)
    wide = LocalVectorStore(tmp_path / "wide", dimension=64)
    narrow = float16_store(tmp_path / "narrow", dimension=64)
    fill(wide, vectors)
    fill(narrow, vectors)

    assert narrow.precision == "float16"
    assert meta(narrow.path, "precision") == "float16"
    assert not (narrow.path / "vectors.f32").exists()
    narrow_bytes = (narrow.path / "vectors.f16").stat().st_size
    assert narrow_bytes * 2 == (wide.path / "vectors.f32").stat().st_size
    assert narrow._cache.refresh().matrix.dtype == np.float16


def test_scores_are_float32_products_of_the_rounded_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = random_unit_vectors(rng, 3000, 64)
    store = float16_store(tmp_path, dimension=64)
    fill(store, vectors)
    store.delete(f"v{i}" for i in range(0, 3000, 10))
    alive = np.arange(3000) % 10 != 0
    rounded = vectors.astype(np.float16).astype(np.float32)

    for query in random_unit_vectors(rng, 5, 64):
        scores = np.where(alive, rounded @ query, -np.inf)
        expected = np.argsort(-scores)[:10]
        matches = store.query(query, top_k=10)
        assert [match.id for match in matches] == [f"v{i}" for i in expected]
        assert [match.score for match in matches] == pytest.approx(scores[expected], abs=1e-6)
        # and within float16's rounding of the float32 scores
        assert [match.score for match in matches] == pytest.approx(
            (vectors @ query)[expected], abs=2e-3
        )


def test_scoring_float16_rows_gives_the_scores_of_their_float32_values() -> None:
    # Past the size where a scan is shared between threads, and for a batch too.
    rng = np.random.default_rng(3)
    rows = random_unit_vectors(rng, scoring._PARALLEL_MIN_ROWS + 1000, 16).astype(np.float16)
    queries = random_unit_vectors(rng, 3, 16)
    widened = rows.astype(np.float32)

    for query in (queries[0], queries):
        scores = scoring.scores_of(rows, query)
        assert scores.dtype == np.float32
        np.testing.assert_array_equal(scores, scoring.scores_of(widened, query))
    slots = np.arange(0, len(rows), 7)
    np.testing.assert_array_equal(
        scoring.gathered_scores(rows, slots, queries[1]),
        scoring.gathered_scores(widened, slots, queries[1]),
    )


def test_float16_is_widened_exactly_as_numpy_casts_it() -> None:
    every_half = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every_half[np.isfinite(every_half)].reshape(-1, 16)  # zeros, subnormals too
    bits = np.empty(finite.shape, dtype=np.int32)

    widened = scoring._widen_float16(finite, bits)

    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened.view(np.int32), finite.astype(np.float32).view(np.int32))


def test_query_many_answers_exactly_what_query_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("search.vectorstores.local.store.QUERIES_PER_PASS", 3)
    rng = np.random.default_rng(11)
    vectors = random_unit_vectors(rng, 3000, 64)
    store = float16_store(tmp_path, dimension=64)
    fill(store, vectors)
    store.delete(f"v{i}" for i in range(0, 3000, 10))
    queries = np.concatenate([vectors[[1, 5]], random_unit_vectors(rng, 5, 64)])

    for where in (None, {"colour": ["red"]}, {"n": list(range(50))}):
        one_by_one = [store.query(query, top_k=10, where=where) for query in queries]
        assert store.query_many(queries, top_k=10, where=where) == one_by_one


def test_an_unchanged_vector_keeps_its_slot_compared_as_stored(store: LocalVectorStore) -> None:
    vector = random_unit_vectors(np.random.default_rng(1), 1, DIMENSION)[0]
    store.upsert([record("a", vector)])
    slot = slot_of(store.path, "a")

    # A float32 difference that float16 cannot hold is the same stored vector.
    nudged = vector.copy()
    nudged[0] = np.nextafter(np.float32(vector[0]), np.float32(2))
    assert nudged.tobytes() != vector.tobytes()
    assert nudged.astype(np.float16).tobytes() == vector.astype(np.float16).tobytes()
    store.upsert([record("a", nudged)])
    assert slot_of(store.path, "a") == slot

    store.upsert([record("a", basis(3))])
    assert slot_of(store.path, "a") != slot


def test_a_vector_beyond_float16s_range_is_refused(store: LocalVectorStore) -> None:
    vector = basis(0) * 1e5  # finite in float32, infinite in float16

    with pytest.raises(VectorStoreError, match="float16's range"):
        store.upsert([record("a", vector)])

    assert store.count() == 0


# Conversion


def test_conversion_both_ways_keeps_ids_metadata_and_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = random_unit_vectors(rng, 500, 64)  # well separated: cosines about +-0.13
    store = LocalVectorStore(tmp_path, dimension=64)
    fill(store, vectors)
    store.delete(["v3", "v4"])
    queries = np.concatenate([vectors[:10], random_unit_vectors(rng, 10, 64)])
    before = answers(store, queries), answers(store, queries, {"colour": ["blue"]})
    f32_bytes = (tmp_path / "vectors.f32").stat().st_size
    store_id = meta(tmp_path, "store_id")

    report = store.convert_precision("float16")

    assert report.action == "converted"
    assert (report.bytes_before, report.bytes_after, report.vectors) == (
        f32_bytes,
        f32_bytes // 2,
        498,
    )
    assert "from float32 to float16" in report.message
    assert not (tmp_path / "vectors.f32").exists()
    assert (tmp_path / "vectors.f16").stat().st_size == f32_bytes // 2
    assert meta(tmp_path, "store_id") != store_id
    assert store.precision == "float16"
    assert store.ids() == {f"v{i}" for i in range(500)} - {"v3", "v4"}
    assert (answers(store, queries), answers(store, queries, {"colour": ["blue"]})) == before
    assert [m.id for m in store.query(vectors[7], top_k=3, where={"n": [7]})] == ["v7"]

    assert store.convert_precision("float32").action == "converted"

    assert not (tmp_path / "vectors.f16").exists()
    assert (tmp_path / "vectors.f32").stat().st_size == f32_bytes
    assert (answers(store, queries), answers(store, queries, {"colour": ["blue"]})) == before
    assert store.query(vectors[0], top_k=1)[0].score == pytest.approx(1.0, abs=1e-3)
    store.upsert([record("new", vectors[3])])
    assert store.query(vectors[3], top_k=1)[0].id == "new"


def test_a_store_holding_a_vector_float16_cannot_hold_is_not_converted(tmp_path: Path) -> None:
    store = LocalVectorStore(tmp_path, dimension=DIMENSION)
    store.upsert([record("huge", basis(0) * 1e5), record("freed", basis(1) * 1e5)])
    store.delete(["freed"])  # a free slot's bytes do not stop a conversion

    with pytest.raises(VectorStoreError, match="cannot be converted to float16"):
        store.convert_precision("float16")

    assert store.precision == "float32"
    assert sorted(file.name for file in tmp_path.glob("*vectors*")) == ["vectors.f32"]
    store.delete(["huge"])
    assert store.convert_precision("float16").action == "converted"
    assert store.query(basis(1), top_k=1) == []


def test_converting_to_the_precision_it_has_does_nothing(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0))])
    store_id = meta(store.path, "store_id")

    report = store.convert_precision("float16")

    assert report.action == "current"
    assert report.message == "the vectors are already float16: nothing to convert"
    assert meta(store.path, "store_id") == store_id


def test_a_reader_opened_before_a_conversion_answers_correctly_after_it(tmp_path: Path) -> None:
    vectors = random_unit_vectors(np.random.default_rng(2), 200, DIMENSION * 8)
    reader = LocalVectorStore(tmp_path, dimension=DIMENSION * 8)
    fill(reader, vectors)
    assert reader.query(vectors[9], top_k=1)[0].id == "v9"
    mapped_before = reader._cache.refresh().matrix

    float16_store(tmp_path, dimension=DIMENSION * 8).convert_precision("float16")

    # The old file is gone, but the reader's mapping of it still reads its pages.
    assert float(mapped_before[9] @ vectors[9]) == pytest.approx(1.0, abs=1e-5)
    assert reader.query(vectors[9], top_k=1)[0].id == "v9"
    assert reader._cache.refresh().matrix.dtype == np.float16
    reader.upsert([record("late", vectors[4])])  # a writer opened as float32 writes float16
    assert [m.id for m in reader.query(vectors[4], top_k=2)] in (["v4", "late"], ["late", "v4"])
    assert not (tmp_path / "vectors.f32").exists()


def test_a_conversion_in_another_process_reaches_this_ones_reader(store: LocalVectorStore) -> None:
    store.upsert([record("a", basis(0)), record("b", basis(1))])
    assert store.query(basis(1), top_k=1)[0].id == "b"

    in_another_process(
        store.path,
        """
        store.convert_precision("float32")
        store.upsert([VectorRecord("c", basis(2))])
        """,
    )

    assert store.precision == "float32"
    assert [m.id for m in store.query(basis(2), top_k=3)] == ["c", "a", "b"]
    assert store.query(basis(1), top_k=1)[0].id == "b"


def test_an_approximate_index_built_before_a_conversion_still_serves(tmp_path: Path) -> None:
    vectors = random_unit_vectors(np.random.default_rng(4), 300, 32)
    store = LocalVectorStore(tmp_path, dimension=32, index_mode="approximate")
    fill(store, vectors)
    assert store.compact().action == "built"

    store.convert_precision("float16")

    snapshot = store._cache.refresh()
    assert snapshot.ann is not None and store._index_serves(snapshot)
    assert [store.query(vector, top_k=1)[0].id for vector in vectors[:20]] == [
        f"v{i}" for i in range(20)
    ]
    assert store.compact().action == "current"  # slots and vector generations kept


def test_an_empty_store_converts_and_then_takes_writes(tmp_path: Path) -> None:
    store = LocalVectorStore(tmp_path, dimension=DIMENSION)

    assert store.convert_precision("float16").action == "converted"
    store.upsert([record("a", basis(2))])

    assert store.query(basis(2), top_k=1)[0].id == "a"
    assert (tmp_path / "vectors.f16").stat().st_size > 0


# Setting and store disagreeing


def test_a_store_made_before_keeps_float32_whatever_the_setting(tmp_path: Path) -> None:
    LocalVectorStore(tmp_path, dimension=DIMENSION).upsert([record("a", basis(0))])
    with sqlite3.connect(tmp_path / "index.sqlite3") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'precision'")  # as stores made before

    reopened = float16_store(tmp_path)
    reopened.upsert([record("b", basis(1))])

    assert reopened.precision == "float32"
    assert not (tmp_path / "vectors.f16").exists()
    assert [m.id for m in reopened.query(basis(1), top_k=2)] == ["b", "a"]


def test_a_mismatch_with_the_setting_warns_once_and_keeps_working(
    store: LocalVectorStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.upsert([record("a", basis(0))])

    with caplog.at_level(logging.WARNING, logger="search.vectorstores.local.store"):
        first = LocalVectorStore(store.path, dimension=DIMENSION)
        first.upsert([record("b", basis(1))])
        second = LocalVectorStore(store.path, dimension=DIMENSION)
        found = [m.id for m in second.query(basis(1), top_k=2)]

    assert found == ["b", "a"]
    assert first.precision == second.precision == "float16"
    assert first.requested_precision == "float32"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeps its vectors in float16" in warnings[0]
    assert "vectorstore_compact --precision float32" in warnings[0]


# The command


def test_vectorstore_compact_converts_then_compacts(settings, capsys) -> None:
    from search.embedding import DIMENSION as MODEL_DIMENSION
    from search.vectorstores import get_vector_store

    settings.LOCAL_STORE_INDEX = "auto"
    vectors = random_unit_vectors(np.random.default_rng(0), 30, MODEL_DIMENSION)
    store = get_vector_store()
    store.upsert(VectorRecord(id=str(i), vector=v) for i, v in enumerate(vectors))

    call_command("vectorstore_compact", precision="float16")
    said = capsys.readouterr().out

    assert "converted 30 vectors from float32 to float16: vector file 8.0 MiB -> 4.0 MiB" in said
    assert "LOCAL_STORE_PRECISION is float32: set it to float16" in said
    assert "fewer than LOCAL_STORE_EXACT_BELOW" in said  # then compacted, as without it
    assert store.precision == "float16"
    assert store.query(vectors[5], top_k=1)[0].id == "5"

    settings.LOCAL_STORE_PRECISION = "float16"
    call_command("vectorstore_compact", precision="float16")
    said = capsys.readouterr().out
    assert "the vectors are already float16: nothing to convert" in said
    assert "LOCAL_STORE_PRECISION" not in said
