import io

import pytest
from django.core.management import call_command

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.index_maintenance import index_rebuild_from_cache, index_reconcile
from catalog.pipeline.indexing import images_index
from search.embedding import get_encoder
from search.imaging import decode_image
from search.vectorstores import VectorRecord, get_vector_store
from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"]


@pytest.fixture
def indexed_catalog():
    images = [services.image_create(file=photo_file(name))[0] for name in NAMES]
    images_index(image_ids=[image.pk for image in images])
    return list(CatalogImage.objects.order_by("pk"))


def top_ids(name: str, k: int = 5) -> list[str]:
    image = decode_image(photo_bytes(name), max_bytes=10**8, max_pixels=10**8).image
    return [m.id for m in get_vector_store().query(get_encoder().embed_one(image), top_k=k)]


def test_rebuilding_into_an_empty_store_gives_the_same_results_without_the_model(
    indexed_catalog, settings, tmp_path, monkeypatch
):
    before = top_ids("coffee.png")
    settings.VECTOR_STORE_PATH = tmp_path / "another-store"
    assert get_vector_store().count() == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not run")

    import catalog.pipeline.indexing

    monkeypatch.setattr(catalog.pipeline.indexing, "_embed_rows", no_model)
    report = index_rebuild_from_cache()
    assert report.upserted == len(NAMES)
    assert report.without_cache == []
    assert top_ids("coffee.png") == before


def test_rebuilding_removes_vectors_of_rows_that_are_gone(indexed_catalog):
    get_vector_store().upsert([VectorRecord(id="9999", vector=indexed_catalog[0].embedding_vector)])
    CatalogImage.objects.filter(pk=indexed_catalog[1].pk).update(is_active=False)
    report = index_rebuild_from_cache()
    assert report.stale_removed == 2
    assert get_vector_store().count() == len(NAMES) - 1


def test_rebuilding_queues_images_without_a_cached_embedding(
    indexed_catalog, django_capture_on_commit_callbacks
):
    CatalogImage.objects.filter(pk=indexed_catalog[0].pk).update(embedding_model="resnet50/other")
    with django_capture_on_commit_callbacks() as queued:
        report = index_rebuild_from_cache()
    assert report.without_cache == [indexed_catalog[0].pk]
    assert queued


def test_the_reindex_command_rebuilds_from_cache_with_a_summary(
    indexed_catalog, settings, tmp_path
):
    settings.VECTOR_STORE_PATH = tmp_path / "fresh"
    out = io.StringIO()
    call_command("reindex", "--from-cache", stdout=out, stderr=io.StringIO())
    assert "5 vector(s) upserted from cache" in out.getvalue()
    assert get_vector_store().count() == 5


def test_reconcile_reports_missing_and_orphaned_vectors(indexed_catalog):
    store = get_vector_store()
    store.delete([str(indexed_catalog[0].pk)])
    store.upsert([VectorRecord(id="9999", vector=indexed_catalog[1].embedding_vector)])
    report = index_reconcile()
    assert report.missing == [indexed_catalog[0].pk]
    assert report.orphaned == ["9999"]
    assert store.count() == len(NAMES)  # reporting changes nothing


def test_reconcile_fix_repairs_both(indexed_catalog):
    store = get_vector_store()
    store.delete([str(indexed_catalog[0].pk)])
    store.upsert([VectorRecord(id="9999", vector=indexed_catalog[1].embedding_vector)])
    out = io.StringIO()
    call_command("reconcile", "--fix", stdout=out)
    assert "1 missing from the vector store, 1 orphaned" in out.getvalue()
    assert index_reconcile().in_sync
    assert store.ids() == {str(image.pk) for image in indexed_catalog}


def test_vectorstore_init_describes_the_local_store(indexed_catalog):
    out = io.StringIO()
    call_command("vectorstore_init", stdout=out)
    assert "backend=local, dimension=2048, count=5" in out.getvalue()


def test_the_admin_shows_the_store_count_next_to_the_database(admin_client, indexed_catalog):
    response = admin_client.get("/admin/catalog/catalogimage/")
    assert b"Database: 5 active image(s) indexed" in response.content
    assert b"Vector store (local):" in response.content
    assert b"5 vector(s)" in response.content


def test_rebuilding_leaves_an_unpublished_image_to_the_worker(
    indexed_catalog, django_capture_on_commit_callbacks
):
    # Embedded, but its host was down: only the worker can publish it before it is indexed.
    CatalogImage.objects.filter(pk=indexed_catalog[0].pk).update(status="failed", published_at=None)
    with django_capture_on_commit_callbacks() as queued:
        report = index_rebuild_from_cache()
    assert report.without_cache == [indexed_catalog[0].pk]
    assert queued
    assert CatalogImage.objects.get(pk=indexed_catalog[0].pk).status == "pending"


class StoreWithAWriterBetweenReads:
    """The configured store, where `writer` runs (another process indexing or deactivating
    an image) just before or just after the maintenance code lists the store's ids."""

    def __init__(self, store, writer, when: str):
        self.store, self.writer, self.when = store, writer, when

    def ids(self) -> set[str]:
        if self.when == "before":
            self.writer()
        listed = self.store.ids()
        if self.when == "after":
            self.writer()
        return listed

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture(params=["before", "after"])
def interleave(request, monkeypatch):
    """interleave(writer): run writer while the store's ids are listed, on either side."""
    import catalog.pipeline.index_maintenance

    def install(writer) -> None:
        store = StoreWithAWriterBetweenReads(get_vector_store(), writer, request.param)
        monkeypatch.setattr(catalog.pipeline.index_maintenance, "get_vector_store", lambda: store)

    return install


def index_new(name: str) -> CatalogImage:
    image = services.image_create(file=photo_file(name))[0]
    images_index(image_ids=[image.pk])
    return image


def deactivate(image: CatalogImage) -> None:
    # As images_set_active writes it; its own indexing task has not run yet.
    CatalogImage.objects.filter(pk=image.pk).update(is_active=False)


def test_rebuilding_keeps_the_vector_of_an_image_indexed_meanwhile(indexed_catalog, interleave):
    added = []
    interleave(lambda: added.append(index_new("camera.png")))
    report = index_rebuild_from_cache()
    assert report.stale_removed == 0
    assert str(added[0].pk) in get_vector_store().ids()


def test_rebuilding_removes_the_vector_of_an_image_deactivated_meanwhile(
    indexed_catalog, interleave
):
    interleave(lambda: deactivate(indexed_catalog[0]))
    index_rebuild_from_cache()
    assert str(indexed_catalog[0].pk) not in get_vector_store().ids()


def test_reconciling_keeps_the_vector_of_an_image_indexed_meanwhile(indexed_catalog, interleave):
    added = []
    interleave(lambda: added.append(index_new("camera.png")))
    report = index_reconcile(fix=True)
    assert report.orphaned == []
    assert str(added[0].pk) in get_vector_store().ids()


def test_reconciling_removes_the_vector_of_an_image_deactivated_meanwhile(
    indexed_catalog, interleave
):
    interleave(lambda: deactivate(indexed_catalog[0]))
    report = index_reconcile(fix=True)
    assert report.orphaned == [str(indexed_catalog[0].pk)]
    assert str(indexed_catalog[0].pk) not in get_vector_store().ids()
