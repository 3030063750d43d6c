"""The fake Pinecone answers the app's calls as Pinecone does and refuses the rest.

Driven through the real `pinecone` SDK, as search/vectorstores/pinecone.py drives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pinecone import Pinecone, RetryConfig, ServerlessSpec
from pinecone.errors import (
    ApiError,
    ConflictError,
    NotFoundError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)
from pinecone.index import Index

from search.vectorstores.pinecone import _without_sdk_retries
from tests.fakes.pinecone_server import MAX_REQUEST_BYTES, FakePinecone

DIMENSION = 4
NO_RETRIES = RetryConfig(max_retries=0)
SPEC = ServerlessSpec(cloud="aws", region="us-east-1")


def unit(axis: int, lean: float = 0.0) -> list[float]:
    """A vector along one axis, tilted a little towards the next one."""
    vector = [0.0] * DIMENSION
    vector[axis] = 1.0
    vector[(axis + 1) % DIMENSION] = lean
    return vector


@pytest.fixture(scope="module")
def pc(pinecone_server: FakePinecone) -> Iterator[Pinecone]:
    # Built once: each SDK client loads a CA bundle, which costs more than a test here.
    server = pinecone_server
    client = Pinecone(api_key=server.api_key, host=server.url, retry_config=NO_RETRIES, timeout=5)
    yield client
    client.close()


@pytest.fixture
def index(pc: Pinecone, pinecone: FakePinecone) -> Iterator[Index]:
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    handle = _without_sdk_retries(pc.Index(name="images"))
    yield handle
    handle.close()


def upsert_statuses(fake: FakePinecone) -> list[int]:
    return [request.status for request in fake.requests if "/vectors/upsert" in request.path]


def test_a_created_index_is_ready_served_here_and_unique(pc, pinecone):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    described = pc.describe_index("images")
    assert described.status.ready and described.host == pinecone.index_host("images")
    assert (described.dimension, described.metric) == (DIMENSION, "cosine")
    assert pc.list_indexes().names() == ["images"]
    with pytest.raises(ConflictError):
        pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    with pytest.raises(NotFoundError):
        pc.describe_index("nothing-here")


def test_a_wrong_api_key_is_unauthorized_on_both_planes(pinecone, index):
    intruder = Pinecone(api_key="wrong-key", host=pinecone.url, retry_config=NO_RETRIES)

    with pytest.raises(UnauthorizedError):
        intruder.list_indexes()
    with pytest.raises(UnauthorizedError):
        _without_sdk_retries(
            intruder.Index(host=pinecone.index_host("images"))
        ).describe_index_stats()


def test_query_returns_the_closest_vectors_first(index):
    index.upsert(
        vectors=[
            {"id": "far", "values": unit(2)},
            {"id": "near", "values": unit(0, lean=0.5), "metadata": {"tags": ["a"]}},
            {"id": "same", "values": unit(0)},
        ]
    )

    response = index.query(vector=unit(0), top_k=2, include_metadata=True)

    assert [match.id for match in response.matches] == ["same", "near"]
    assert response.matches[0].score == pytest.approx(1.0)
    assert response.matches[1].score == pytest.approx(1 / (1 + 0.5**2) ** 0.5)
    assert response.matches[1].metadata == {"tags": ["a"]}


def test_an_in_filter_on_a_list_valued_field_matches_any_element(index):
    index.upsert(
        vectors=[
            {"id": "beach", "values": unit(0), "metadata": {"tags": ["beach", "sun"]}},
            {"id": "city", "values": unit(1), "metadata": {"tags": ["city"], "kind": "photo"}},
            {"id": "bare", "values": unit(2)},
        ]
    )

    def matching(filter: dict) -> list[str]:
        return sorted(m.id for m in index.query(vector=unit(0), top_k=10, filter=filter).matches)

    assert matching({"tags": {"$in": ["sun", "snow"]}}) == ["beach"]
    assert matching({"tags": {"$in": ["city"]}, "kind": {"$in": ["photo"]}}) == ["city"]
    assert matching({"tags": {"$in": ["city"]}, "kind": {"$in": ["drawing"]}}) == []


def test_deletes_stats_and_list_count_vectors_per_namespace(index):
    index.upsert(vectors=[(f"a{i}", unit(i)) for i in range(3)], namespace="photos")
    index.upsert(vectors=[("b0", unit(0))], namespace="drafts")

    index.delete(ids=["a0", "missing"], namespace="photos")
    index.delete(ids=["b0"], namespace="drafts")
    stats = index.describe_index_stats()

    assert stats.total_vector_count == 2 and list(stats.namespaces) == ["photos"]
    pages = [[v.id for v in page.vectors] for page in index.list(namespace="photos", limit=1)]
    assert pages == [["a1"], ["a2"]]
    with pytest.raises(NotFoundError):  # an emptied namespace is gone
        index.delete(ids=["b0"], namespace="drafts")


NOT_EMULATED: dict[str, Callable[[Index], object]] = {
    "fetch": lambda index: index.fetch(ids=["a"]),
    "query by id": lambda index: index.query(id="a", top_k=1),
    "a filter other than $in": lambda index: index.query(
        vector=unit(0), top_k=1, filter={"tags": {"$eq": "a"}}
    ),
    "a delete by filter": lambda index: index.delete(filter={"tags": {"$in": ["a"]}}),
    "deleteAll": lambda index: index.delete(delete_all=True),
}


@pytest.mark.parametrize("attempt", NOT_EMULATED.values(), ids=NOT_EMULATED.keys())
def test_what_the_app_never_sends_is_refused_as_not_emulated(index, attempt):
    index.upsert(vectors=[("a", unit(0))])

    with pytest.raises(ApiError) as refused:
        attempt(index)

    assert refused.value.status_code == 501
    assert "does not emulate" in str(refused.value)


def test_deleting_an_index_is_not_emulated(pc, pinecone):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    with pytest.raises(ApiError, match="does not emulate"):
        pc.delete_index("images")


REFUSED_WITH_400: dict[str, Callable[[Index], object]] = {
    "more than 1000 vectors": lambda index: index.upsert(
        vectors=[(f"v{i}", unit(0)) for i in range(1001)]
    ),
    "more than 2 MB": lambda index: index.upsert(
        vectors=[
            {"id": f"v{i}", "values": unit(0), "metadata": {"text": "x" * 39_000}}
            for i in range(60)
        ]
    ),
    "metadata over 40 KB": lambda index: index.upsert(
        vectors=[{"id": "v", "values": unit(0), "metadata": {"text": "x" * 41_000}}]
    ),
    "a null metadata value": lambda index: index.upsert(
        vectors=[{"id": "v", "values": unit(0), "metadata": {"title": None}}]
    ),
    "an upsert of the wrong dimension": lambda index: index.upsert(vectors=[("v", [1.0, 0.0])]),
    "an all-zero vector": lambda index: index.upsert(vectors=[("v", [0.0] * DIMENSION)]),
    "more than 1000 ids to delete": lambda index: index.delete(ids=[f"v{i}" for i in range(1001)]),
}


@pytest.mark.parametrize("attempt", REFUSED_WITH_400.values(), ids=REFUSED_WITH_400.keys())
def test_requests_over_pinecones_limits_are_refused_with_400(index, pinecone, attempt):
    index.upsert(vectors=[("kept", unit(1))])

    with pytest.raises(ApiError) as refused:
        attempt(index)

    assert refused.value.status_code == 400 and refused.value.body["code"] == 3
    assert set(pinecone.vectors("images")) == {"kept"}  # a refused batch writes nothing


def test_requests_record_the_size_and_vector_count_of_each_upsert(index, pinecone):
    index.upsert(vectors=[(f"v{i}", unit(i % DIMENSION)) for i in range(1000)])

    upserts = [request for request in pinecone.requests if "/vectors/upsert" in request.path]

    assert [request.vector_count for request in upserts] == [1000]
    assert 0 < upserts[0].body_bytes <= MAX_REQUEST_BYTES
    assert upserts[0].index == "images" and upserts[0].status == 200


@pytest.mark.parametrize(
    ("status", "raised"), [(429, RateLimitError), (500, ServiceError), (503, ServiceError)]
)
def test_injected_failures_surface_once_when_the_sdk_does_not_retry(
    index, pinecone, status, raised
):
    pinecone.fail_next(1, status=status, path_contains="/vectors/upsert", retry_after=2)

    with pytest.raises(raised) as failed:
        index.upsert(vectors=[("v", unit(0))])
    index.upsert(vectors=[("v", unit(0))])

    assert failed.value.status_code == status
    assert upsert_statuses(pinecone) == [status, 200]
    if status == 429:
        assert failed.value.retry_after == 2.0


def test_the_data_plane_retries_unless_told_not_to(pc, pinecone, index, monkeypatch):
    """Why the store swaps the SDK's HTTP client: `Index` retries 503s by itself."""
    from pinecone._internal import http_client

    monkeypatch.setattr(http_client, "_retry_sleep", lambda seconds: None)
    # Retries share a process-wide budget per host (127.0.0.1 for every fake); start full.
    http_client.get_budget_registry()._reset()
    pinecone.fail_next(2, status=503, path_contains="/vectors/upsert")

    pc.Index(name="images").upsert(vectors=[("v", unit(0))])

    assert upsert_statuses(pinecone) == [503, 503, 200]


def test_a_slow_answer_trips_a_short_timeout_but_the_write_still_lands(index, pinecone):
    pinecone.delay_next(1, seconds=0.4, path_contains="/vectors/upsert")

    started = time.monotonic()
    with pytest.raises(PineconeTimeoutError):
        index.upsert(vectors=[("v", unit(0))], timeout=0.1)
    assert time.monotonic() - started < 0.35

    deadline = time.monotonic() + 2
    while "v" not in pinecone.vectors("images") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "v" in pinecone.vectors("images")  # a timeout says nothing about whether it landed


def test_reset_drops_indexes_and_faults_and_reset_faults_keeps_indexes(pc, pinecone):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    pinecone.fail_next(5, status=500)
    pinecone.reset_faults()
    assert pc.list_indexes().names() == ["images"]

    pinecone.fail_next(5, status=500)
    pinecone.reset()

    assert pc.list_indexes().names() == []
