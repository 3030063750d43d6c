from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline import indexing
from catalog.pipeline.indexing import images_index
from search.imaging import ImageRejected
from search.vectorstores import get_vector_store
from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db
Status = CatalogImage.Status


def create(name="astronaut.png", **kwargs) -> CatalogImage:
    image, created = services.image_create(file=photo_file(name), **kwargs)
    assert created
    return image


def test_creating_an_image_records_its_size_hash_and_pending_status():
    image = create("chelsea.png", title="Chelsea", tags="Cat, animal ,cat")
    image.refresh_from_db()
    assert (image.width, image.height) == (451, 300)
    assert image.status == Status.PENDING
    assert image.tags == ["animal", "cat"]
    assert len(image.sha256) == 64
    assert image.staged_file.name.endswith(f"{image.sha256}.jpg")
    assert (image.format, image.image_url, image.published_at) == ("jpg", "", None)


def test_the_title_defaults_to_the_file_name():
    assert create("coffee.png").title == "coffee"


def test_uploading_the_same_bytes_again_returns_the_existing_image():
    first = create()
    again, created = services.image_create(file=photo_file(), title="another title")
    assert not created
    assert again.pk == first.pk
    assert CatalogImage.objects.count() == 1


def test_creating_queues_indexing_only_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        create()
    assert len(callbacks) == 1


def test_it_refuses_a_file_that_is_not_an_image():
    with pytest.raises(ImageRejected) as caught:
        services.image_create(file=ContentFile(b"hello", name="notes.txt"))
    assert caught.value.code == "not_an_image"
    assert not CatalogImage.objects.exists()


def test_indexing_embeds_stores_the_embedding_and_upserts_one_vector():
    image = create()
    report = images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert report.indexed == [image.pk]
    assert image.status == Status.INDEXED
    assert image.embedding_model == "resnet50/random-seed0"
    assert image.embedding_vector.shape == (2048,)
    store = get_vector_store()
    assert store.ids() == {str(image.pk)}
    assert store.query(image.embedding_vector, top_k=1)[0].id == str(image.pk)


def test_reindexing_twice_leaves_one_vector_and_the_same_row():
    image = create()
    images_index(image_ids=[image.pk])
    before = CatalogImage.objects.values().get(pk=image.pk)
    report = images_index(image_ids=[image.pk])
    assert report.embedded == []  # the cached embedding was reused, the model not run
    assert CatalogImage.objects.values().get(pk=image.pk) == before
    assert get_vector_store().count() == 1


def test_indexing_many_images_embeds_them_in_one_batch():
    images = [create(name) for name in ("astronaut.png", "coffee.png", "rocket.jpg")]
    report = images_index(image_ids=[i.pk for i in images])
    assert sorted(report.embedded) == sorted(i.pk for i in images)
    assert get_vector_store().count() == 3


def test_an_unreadable_file_is_recorded_as_failed_with_its_reason():
    image = create()
    with open(image.staged_file.path, "wb") as broken:
        broken.write(photo_bytes()[:500])
    report = images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == Status.FAILED
    assert image.failure_reason.startswith("corrupt_image")
    assert image.pk in report.failed
    assert get_vector_store().count() == 0


def test_a_failed_image_can_be_retried(django_capture_on_commit_callbacks):
    image = create()
    content = Path(image.staged_file.path).read_bytes()
    with open(image.staged_file.path, "wb") as broken:
        broken.write(content[:500])
    images_index(image_ids=[image.pk])
    with open(image.staged_file.path, "wb") as fixed:
        fixed.write(content)
    with django_capture_on_commit_callbacks() as callbacks:
        services.images_retry(images=[image])
    assert len(callbacks) == 1
    image.refresh_from_db()
    assert (image.status, image.failure_reason) == (Status.PENDING, "")
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == Status.INDEXED


def test_unavailable_weights_mark_the_image_failed_with_what_to_do(settings, tmp_path):
    settings.EMBEDDING_WEIGHTS = str(tmp_path / "missing.pth")
    image = create()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == Status.FAILED
    assert "EMBEDDING_WEIGHTS" in image.failure_reason


def test_deactivating_removes_the_vector_and_reactivating_restores_it_from_cache(
    django_capture_on_commit_callbacks,
):
    image = create()
    images_index(image_ids=[image.pk])
    services.image_update(image=image, is_active=False)
    images_index(image_ids=[image.pk])
    assert get_vector_store().count() == 0
    services.image_update(image=image, is_active=True)
    report = images_index(image_ids=[image.pk])
    assert report.embedded == []
    assert get_vector_store().ids() == {str(image.pk)}


def test_deleting_an_image_removes_its_row_vector_and_hosted_files(
    eager_celery, django_capture_on_commit_callbacks, settings
):
    image = create()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    hosted = [settings.MEDIA_ROOT / image.hosted_key, settings.MEDIA_ROOT / _thumbnail(image)]
    assert all(path.exists() for path in hosted)
    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=image)
    assert not CatalogImage.objects.exists()
    assert get_vector_store().count() == 0
    assert not any(path.exists() for path in hosted)


def test_deleting_an_image_never_published_removes_its_staged_copy(
    eager_celery, django_capture_on_commit_callbacks
):
    image = create()
    staged = Path(image.staged_file.path)
    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=image)
    assert not staged.exists()


def _thumbnail(image) -> str:
    return image.hosted_key.rsplit(".", 1)[0] + ".thumb.webp"


def test_indexing_publishes_the_original_and_a_thumbnail_then_unstages_it(settings):
    image = create("chelsea.png")
    staged = Path(image.staged_file.path)
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.image_host == "local"
    assert image.image_url == f"/media/{image.hosted_key}"
    assert image.thumbnail_url.endswith(".thumb.webp")
    assert (settings.MEDIA_ROOT / image.hosted_key).read_bytes() == photo_bytes("chelsea.png")
    from PIL import Image

    with Image.open(settings.MEDIA_ROOT / _thumbnail(image)) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (320, 213)  # 451 x 300 scaled to 320 on the longest side
    assert image.staged_file.name == ""
    assert not staged.exists()


def test_a_host_outage_keeps_the_staged_copy_and_the_retry_publishes_it(settings, tmp_path):
    from catalog.hosting import ImageHostError

    image = create()
    media_root = settings.MEDIA_ROOT
    (tmp_path / "not-a-folder").write_text("")
    settings.MEDIA_ROOT = tmp_path / "not-a-folder" / "media"  # every write fails for real
    with pytest.raises(ImageHostError):
        images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.staged_file and Path(image.staged_file.path).exists()
    assert image.embedding is not None  # computed once, kept for the retry
    assert (image.status, image.published_at) == (Status.PROCESSING, None)

    settings.MEDIA_ROOT = media_root
    report = images_index(image_ids=[image.pk])
    assert report.embedded == []
    image.refresh_from_db()
    assert image.status == Status.INDEXED and image.is_published


def test_a_row_deleted_while_it_was_embedded_keeps_no_vector(monkeypatch):
    image = create()
    original_embed = indexing._embed_rows

    def embed_then_delete(*args):
        vectors = original_embed(*args)
        CatalogImage.objects.filter(pk=image.pk).delete()  # a curator deletes it meanwhile
        return vectors

    monkeypatch.setattr(indexing, "_embed_rows", embed_then_delete)
    images_index(image_ids=[image.pk])
    assert get_vector_store().count() == 0


def test_the_stored_embedding_equals_a_query_of_the_same_bytes():
    from search.embedding import get_encoder
    from search.imaging import decode_image

    image = create("coffee.png")
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    query = get_encoder().embed_one(
        decode_image(photo_bytes("coffee.png"), max_bytes=10**8, max_pixels=10**8).image
    )
    assert np.array_equal(image.embedding_vector, query)
