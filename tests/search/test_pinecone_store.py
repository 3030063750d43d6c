"""Pinecone specifics beyond the shared contract: limits, retries, index checks, failures."""

import io
import json

import numpy as np
import pytest

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from search.vectorstores import DimensionMismatch, VectorRecord, VectorStoreError
from search.vectorstores.pinecone import MAX_UPSERT_BYTES, pinecone_metadata
from tests.conftest import b64, photo_bytes, photo_file, pinecone_store

DIMENSION = 2048


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def records(n: int) -> list[VectorRecord]:
    return [
        VectorRecord(id=str(i), vector=v, metadata={"title": f"image {i}", "tags": ["demo"]})
        for i, v in enumerate(unit_vectors(n))
    ]


def upsert_requests(server):
    return [r for r in server.requests if "upsert" in r.path]


def test_upserts_are_batched_inside_pinecones_request_limits(pinecone):
    store = pinecone_store(pinecone, DIMENSION)
    assert store.upsert(records(120)) == 120
    sent = upsert_requests(pinecone)
    assert len(sent) > 1  # 120 vectors of 2048 floats do not fit in one 2 MB request
    assert all(r.body_bytes <= MAX_UPSERT_BYTES and r.vector_count <= 1000 for r in sent)
    assert store.count() == 120


def test_deletes_are_sent_in_chunks_of_at_most_1000_ids(pinecone):
    store = pinecone_store(pinecone, 4)
    store.upsert(VectorRecord(id=str(i), vector=np.ones(4, np.float32) / 2) for i in range(1500))
    store.delete([str(i) for i in range(1500)])
    assert store.count() == 0


def test_metadata_drops_nulls_and_stays_under_40_kb():
    metadata = pinecone_metadata({"title": "x" * 100_000, "tags": ["a", None], "url": None})
    assert "url" not in metadata
    assert metadata["tags"] == ["a"]
    assert len(json.dumps(metadata).encode()) < 40 * 1024


def test_only_the_stores_retry_policy_applies(pinecone):
    """One refused upsert costs exactly one more request: the SDK does not retry as well."""
    store = pinecone_store(pinecone, DIMENSION, max_retries=0)
    store.prepare()
    pinecone.fail_next(1, status=503, path_contains="upsert")
    with pytest.raises(VectorStoreError):
        store.upsert(records(1))
    assert len(upsert_requests(pinecone)) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried(pinecone, status):
    store = pinecone_store(pinecone, DIMENSION)
    pinecone.fail_next(2, status=status, path_contains="upsert")
    assert store.upsert(records(3)) == 3
    assert len(upsert_requests(pinecone)) == 3  # two refused, then accepted
    assert store.count() == 3


def test_retries_are_bounded_then_the_failure_is_reported(pinecone):
    store = pinecone_store(pinecone, DIMENSION, max_retries=2)
    pinecone.fail_next(10, status=500, path_contains="upsert")
    with pytest.raises(VectorStoreError, match="after 3 attempt"):
        store.upsert(records(1))
    assert len(upsert_requests(pinecone)) == 3


def test_a_slow_answer_times_out_and_is_retried(pinecone):
    store = pinecone_store(pinecone, DIMENSION)
    store.upsert(records(2))
    pinecone.delay_next(1, seconds=3.0, path_contains="query")  # the store's timeout is 2 s
    matches = store.query(unit_vectors(2)[1], top_k=1)
    assert matches[0].id == "1"


def test_a_refused_request_is_not_retried(pinecone):
    store = pinecone_store(pinecone, DIMENSION)
    store.prepare()
    pinecone.fail_next(5, status=400, path_contains="upsert")
    with pytest.raises(VectorStoreError, match="refused"):
        store.upsert(records(1))
    assert len(upsert_requests(pinecone)) == 1


def test_the_first_use_creates_a_missing_index(pinecone):
    store = pinecone_store(pinecone, DIMENSION)
    store.upsert(records(1))
    description = store.prepare()
    assert description["dimension"] == DIMENSION
    assert description["metric"] == "cosine"


def test_an_existing_index_of_another_dimension_is_refused_clearly(pinecone):
    pinecone_store(pinecone, 512).prepare()  # someone made "contract" with 512 dimensions
    with pytest.raises(DimensionMismatch, match=r"dimension 512.*needs 2048"):
        pinecone_store(pinecone, DIMENSION).prepare()


def test_a_wrong_api_key_is_a_clear_error(pinecone):
    from search.vectorstores.pinecone import PineconeOptions, PineconeVectorStore

    store = PineconeVectorStore(
        PineconeOptions(api_key="wrong", index_name="contract", host=pinecone.url), DIMENSION
    )
    with pytest.raises(VectorStoreError, match="refused"):
        store.prepare()


# --- Through Django: settings, task, API, moving a catalog -----------------------------


@pytest.mark.django_db
def test_search_answers_503_when_pinecone_cannot_be_reached(client, use_pinecone):
    use_pinecone.fail_next(10, status=503, path_contains="query")
    response = client.post(
        "/api/search/", {"image": b64(photo_bytes())}, content_type="application/json"
    )
    assert response.status_code == 503
    assert response.json()["error"] == "vector_store_unavailable"


@pytest.mark.django_db
def test_a_final_pinecone_failure_marks_the_image_failed_so_it_can_be_retried(use_pinecone):
    from celery.exceptions import Retry

    from catalog.tasks import MAX_RETRIES, index_images

    image, _ = services.image_create(file=photo_file())
    use_pinecone.fail_next(100, status=500, path_contains="upsert")
    with pytest.raises(Retry):  # early attempts ask Celery to try again later
        index_images.apply(args=[[image.pk]], retries=0, throw=True)
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.PROCESSING
    with pytest.raises(VectorStoreError):  # the last one gives up
        index_images.apply(args=[[image.pk]], retries=MAX_RETRIES, throw=True)
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.FAILED
    assert "vector store failed" in image.failure_reason
    assert image.embedding is not None  # the retry will not need the model again

    use_pinecone.reset_faults()
    services.images_retry(images=[image])
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.INDEXED


@pytest.mark.django_db
def test_moving_a_local_catalog_to_pinecone_gives_the_same_top_results(client, settings, pinecone):
    from django.core.management import call_command

    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png", "camera.png"]
    images = [services.image_create(file=photo_file(name))[0] for name in names]
    images_index(image_ids=[image.pk for image in images])

    def top(name):
        body = {"image": b64(photo_bytes(name)), "top_k": 5}
        results = client.post("/api/search/", body, content_type="application/json").json()
        return [(r["id"], round(r["score"], 4)) for r in results["results"]]

    local_results = {name: top(name) for name in ("coffee.png", "rocket.jpg")}

    settings.VECTOR_STORE = "pinecone"
    settings.PINECONE_API_KEY = pinecone.api_key
    settings.PINECONE_HOST = pinecone.url
    settings.PINECONE_INDEX = "moved"
    call_command("vectorstore_init", stdout=io.StringIO())
    call_command("reindex", "--from-cache", stdout=io.StringIO(), stderr=io.StringIO())
    assert {name: top(name) for name in local_results} == local_results
