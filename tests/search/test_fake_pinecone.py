"""The fake Pinecone server, driven by the real pinecone SDK over HTTP: no mocks.

Besides checking the fake, these pin down what the Pinecone backend can rely on from
pinecone 10.2.0: which exception each refusal raises, and that the data-plane client
retries on its own whatever `retry_config` the `Pinecone` client was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest
from pinecone import Pinecone, RetryConfig, ServerlessSpec
from pinecone.errors import (
    ApiError,
    ConflictError,
    NotFoundError,
    PineconeTimeoutError,
    PineconeValueError,
    RateLimitError,
    ServiceError,
    UnauthorizedError,
)
from pinecone.index import Index

from tests.fakes.pinecone_server import MAX_REQUEST_BYTES, FakePinecone

DIMENSION = 4
NO_RETRIES = RetryConfig(max_retries=0)
SPEC = ServerlessSpec(cloud="aws", region="us-east-1")


def without_sdk_retries(index: Index) -> Index:
    """Give a data-plane Index an HTTP client that does not retry.

    pinecone 10.2.0 builds every REST Index with the default RetryConfig (3 retries), and
    neither `Pinecone.Index` nor `Index` accepts one; swapping the private `_http` is the
    only way to leave retries to the caller. test_the_data_plane_retries_unless_told_not_to
    fails if a new SDK version changes either half of that.
    """
    from pinecone._internal.constants import DATA_PLANE_API_VERSION
    from pinecone._internal.http_client import HTTPClient

    index._http.close()
    index._http = HTTPClient(
        replace(index._config, retry_config=NO_RETRIES), DATA_PLANE_API_VERSION
    )
    return index


def unit(axis: int, lean: float = 0.0) -> list[float]:
    """A vector along one axis, tilted a little towards the next one."""
    vector = [0.0] * DIMENSION
    vector[axis] = 1.0
    vector[(axis + 1) % DIMENSION] = lean
    return vector


@pytest.fixture(scope="module")
def server() -> Iterator[FakePinecone]:
    with FakePinecone() as running:
        yield running


@pytest.fixture(autouse=True)
def fake(server: FakePinecone) -> FakePinecone:
    server.reset()  # one server for the module; each test starts from an empty project
    return server


@pytest.fixture(scope="module")
def pc(server: FakePinecone) -> Iterator[Pinecone]:
    # Built once: each SDK client loads a CA bundle, which costs more than a test here.
    client = Pinecone(api_key=server.api_key, host=server.url, retry_config=NO_RETRIES, timeout=5)
    yield client
    client.close()


@pytest.fixture
def index(pc: Pinecone, fake: FakePinecone) -> Iterator[Index]:
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    handle = without_sdk_retries(pc.Index(name="images"))
    yield handle
    handle.close()


def matching(index: Index, filter: dict) -> list[str]:
    response = index.query(vector=unit(0), top_k=10, filter=filter)
    return sorted(match.id for match in response.matches)


# -- control plane -------------------------------------------------------------------------


def test_a_created_index_is_ready_and_served_by_the_same_server(pc, fake):
    created = pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    described = pc.describe_index("images")
    assert created.status.ready and described.status.ready
    assert described.host == fake.index_host("images")
    assert described.host.startswith(fake.url)
    assert (described.dimension, described.metric) == (DIMENSION, "cosine")
    assert pc.has_index("images")
    assert [model.name for model in pc.list_indexes()] == ["images"]


def test_describing_a_missing_index_is_not_found(pc):
    with pytest.raises(NotFoundError) as refused:
        pc.describe_index("nothing-here")

    assert refused.value.status_code == 404
    assert not pc.has_index("nothing-here")


def test_creating_an_index_twice_is_a_conflict(pc):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    with pytest.raises(ConflictError) as refused:
        pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    assert refused.value.status_code == 409


def test_a_deleted_index_is_gone(pc):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)

    pc.delete_index("images")

    assert not pc.has_index("images")
    with pytest.raises(NotFoundError):
        pc.delete_index("images")


def test_a_wrong_api_key_is_unauthorized_on_both_planes(fake, index):
    intruder = Pinecone(api_key="wrong-key", host=fake.url, retry_config=NO_RETRIES)

    with pytest.raises(UnauthorizedError):
        intruder.list_indexes()
    with pytest.raises(UnauthorizedError):
        without_sdk_retries(intruder.Index(host=fake.index_host("images"))).describe_index_stats()


# -- data plane ----------------------------------------------------------------------------


def test_query_returns_the_closest_vectors_first(index):
    index.upsert(
        vectors=[
            {"id": "far", "values": unit(2), "metadata": {"title": "far"}},
            {"id": "near", "values": unit(0, lean=0.5), "metadata": {"title": "near"}},
            {"id": "same", "values": unit(0), "metadata": {"title": "same"}},
        ]
    )

    response = index.query(vector=unit(0), top_k=2, include_metadata=True, include_values=False)

    assert [match.id for match in response.matches] == ["same", "near"]
    assert response.matches[0].score == pytest.approx(1.0)
    assert response.matches[1].score == pytest.approx(1 / (1 + 0.5**2) ** 0.5)
    assert response.matches[1].metadata == {"title": "near"}
    assert response.matches[1].values == []


def test_a_filter_on_a_list_valued_field_matches_any_element(index):
    index.upsert(
        vectors=[
            {"id": "beach", "values": unit(0), "metadata": {"tags": ["beach", "sun"]}},
            {"id": "city", "values": unit(1), "metadata": {"tags": ["city"], "year": 2020}},
            {"id": "bare", "values": unit(2)},
        ]
    )

    assert matching(index, {"tags": {"$in": ["sun", "snow"]}}) == ["beach"]
    assert matching(index, {"tags": "beach"}) == ["beach"]
    assert matching(index, {"tags": {"$eq": "city"}}) == ["city"]
    # Like Pinecone, a record without the field matches neither $ne nor $nin.
    assert matching(index, {"tags": {"$nin": ["sun"]}}) == ["city"]
    assert matching(index, {"tags": {"$ne": "city"}}) == ["beach"]
    assert matching(index, {"$or": [{"tags": "sun"}, {"year": {"$gte": 2020}}]}) == [
        "beach",
        "city",
    ]
    assert matching(index, {"$and": [{"tags": "city"}, {"year": 2019}]}) == []


def test_deletes_and_stats_count_vectors_per_namespace(index):
    index.upsert(vectors=[(f"a{i}", unit(i)) for i in range(3)], namespace="photos")
    index.upsert(vectors=[(f"b{i}", unit(i)) for i in range(2)], namespace="drafts")

    before = index.describe_index_stats()
    index.delete(ids=["a0", "a1", "missing"], namespace="photos")
    index.delete(delete_all=True, namespace="drafts")
    after = index.describe_index_stats()

    assert before.total_vector_count == 5
    assert {name: ns.vector_count for name, ns in before.namespaces.items()} == {
        "photos": 3,
        "drafts": 2,
    }
    assert before.dimension == DIMENSION
    assert after.total_vector_count == 1
    assert list(after.namespaces) == ["photos"]


def test_deleting_in_a_namespace_that_holds_nothing_is_not_found(index):
    with pytest.raises(NotFoundError):
        index.delete(ids=["a0"], namespace="never-written")


def test_list_pages_through_ids_in_order(index):
    index.upsert(vectors=[(f"img-{i}", unit(i % DIMENSION)) for i in range(5)])
    index.upsert(vectors=[("other", unit(0))])

    first = index.list_paginated(prefix="img-", limit=2)
    pages = [[item.id for item in page.vectors] for page in index.list(prefix="img-", limit=2)]

    assert [item.id for item in first.vectors] == ["img-0", "img-1"]
    assert first.pagination is not None and first.pagination.next
    assert pages == [["img-0", "img-1"], ["img-2", "img-3"], ["img-4"]]


def test_fetch_returns_what_pinecone_stores(index):
    index.upsert(
        vectors=[{"id": "a", "values": [0.1, 0.2, 0.3, 0.4], "metadata": {"image_id": 7}}],
        namespace="photos",
    )

    fetched = index.fetch(ids=["a", "missing"], namespace="photos")

    assert list(fetched.vectors) == ["a"]
    # Values come back as float32 and numbers in metadata as floats, as from Pinecone.
    assert fetched.vectors["a"].values == pytest.approx([0.1, 0.2, 0.3, 0.4], rel=1e-6)
    assert fetched.vectors["a"].values[0] != 0.1
    assert fetched.vectors["a"].metadata == {"image_id": 7.0}


# -- Pinecone's limits ---------------------------------------------------------------------

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
    "a query of the wrong dimension": lambda index: index.query(vector=[1.0], top_k=1),
    "more than 1000 ids to delete": lambda index: index.delete(ids=[f"v{i}" for i in range(1001)]),
}


@pytest.mark.parametrize("attempt", REFUSED_WITH_400.values(), ids=REFUSED_WITH_400.keys())
def test_requests_over_pinecones_limits_are_refused_with_400(index, fake, attempt):
    index.upsert(vectors=[("kept", unit(1))])

    with pytest.raises(ApiError) as refused:
        attempt(index)

    assert refused.value.status_code == 400
    assert refused.value.body["code"] == 3
    assert set(fake.vectors("images")) == {"kept"}  # a refused batch writes nothing


def test_top_k_over_10000_is_refused_by_the_sdk_and_by_the_server(index, fake):
    with pytest.raises(PineconeValueError):
        index.query(vector=unit(0), top_k=10_001)

    answer = httpx.post(
        fake.index_host("images") + "/query",
        headers={"Api-Key": fake.api_key},
        json={"vector": unit(0), "topK": 10_001},
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == 3


def test_requests_record_the_size_and_vector_count_of_each_upsert(index, fake):
    index.upsert(vectors=[(f"v{i}", unit(i % DIMENSION)) for i in range(1000)])

    upserts = [request for request in fake.requests if request.path.endswith("/vectors/upsert")]

    assert [request.vector_count for request in upserts] == [1000]
    assert 0 < upserts[0].body_bytes <= MAX_REQUEST_BYTES
    assert upserts[0].index == "images" and upserts[0].status == 200


# -- injected faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "raised"), [(429, RateLimitError), (500, ServiceError), (503, ServiceError)]
)
def test_injected_failures_surface_once_when_the_sdk_does_not_retry(index, fake, status, raised):
    fake.fail_next(1, status=status, path_contains="/vectors/upsert")

    with pytest.raises(raised) as failed:
        index.upsert(vectors=[("v", unit(0))])
    index.upsert(vectors=[("v", unit(0))])

    assert failed.value.status_code == status
    upserts = [request.status for request in fake.requests if "/vectors/upsert" in request.path]
    assert upserts == [status, 200]


def test_a_rate_limit_can_carry_retry_after(index, fake):
    fake.fail_next(1, status=429, path_contains="/query", retry_after=2)

    with pytest.raises(RateLimitError) as throttled:
        index.query(vector=unit(0), top_k=1)

    assert throttled.value.retry_after == 2.0


def test_control_plane_failures_surface_when_retries_are_off(pc, fake):
    fake.fail_next(1, status=503, path_contains="/indexes")

    with pytest.raises(ServiceError):
        pc.list_indexes()

    assert pc.list_indexes().names() == []


def test_the_data_plane_retries_unless_told_not_to(pc, fake, index, monkeypatch):
    from pinecone._internal import http_client

    monkeypatch.setattr(http_client, "_retry_sleep", lambda seconds: None)
    # Retries share a process-wide budget per host (127.0.0.1 for every fake); start full.
    http_client.get_budget_registry()._reset()
    fake.fail_next(2, status=503, path_contains="/vectors/upsert")

    # Built from a client with retries off, yet it retries 503s by itself.
    pc.Index(name="images").upsert(vectors=[("v", unit(0))])

    upserts = [request.status for request in fake.requests if "/vectors/upsert" in request.path]
    assert upserts == [503, 503, 200]


def test_a_slow_answer_trips_a_short_timeout_but_the_write_still_lands(index, fake):
    fake.delay_next(1, seconds=0.4, path_contains="/vectors/upsert")

    started = time.monotonic()
    with pytest.raises(PineconeTimeoutError):
        index.upsert(vectors=[("v", unit(0))], timeout=0.1)
    assert time.monotonic() - started < 0.35

    deadline = time.monotonic() + 2
    while "v" not in fake.vectors("images") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "v" in fake.vectors("images")  # a timeout says nothing about whether it was applied


def test_the_client_timeout_reaches_the_data_plane(fake, index):
    impatient = Pinecone(api_key=fake.api_key, host=fake.url, timeout=0.1)
    fake.delay_next(1, seconds=0.4, path_contains="/describe_index_stats")

    with pytest.raises(PineconeTimeoutError):
        without_sdk_retries(impatient.Index(name="images")).describe_index_stats()


def test_reset_drops_indexes_and_pending_faults(pc, fake):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    fake.fail_next(5, status=500)

    fake.reset()

    assert pc.list_indexes().names() == []
    assert [request.status for request in fake.requests] == [200]


def test_reset_faults_keeps_the_indexes(pc, fake):
    pc.create_index(name="images", dimension=DIMENSION, metric="cosine", spec=SPEC)
    fake.fail_next(5, status=500)

    fake.reset_faults()

    assert pc.list_indexes().names() == ["images"]
