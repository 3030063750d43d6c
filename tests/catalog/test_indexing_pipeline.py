"""Indexing decodes ahead of the model and publishes behind it: the same vectors, the same
failures, fewer waits."""

import threading

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline import indexing
from catalog.pipeline.indexing import images_index
from search.decoding import decode_upload
from search.embedding import ImageEncoder, get_encoder
from search.services import search_similar
from search.vectorstores import get_vector_store
from tests.catalog.test_services import create
from tests.conftest import encode, photo, photo_bytes

pytestmark = pytest.mark.django_db
Status = CatalogImage.Status
NAMES = ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")


@pytest.fixture
def groups_of_two(settings):
    """Images go through the model two at a time, so that a batch of five is three groups."""
    settings.EMBEDDING_BATCH_SIZE = 2


def two_megapixel_jpeg(name: str = "coffee.png") -> bytes:
    """A camera-sized JPEG: decoded at a reduced DCT scale (draft) for the model."""
    return encode(photo(name).resize((1632, 1224), Image.Resampling.BILINEAR), quality=90)


def test_each_image_gets_the_vector_of_its_own_picture(groups_of_two):
    images = [create(name) for name in NAMES]

    report = images_index(image_ids=[image.pk for image in images])

    assert sorted(report.indexed) == sorted(image.pk for image in images)
    encoder = get_encoder()
    for image, name in zip(images, NAMES, strict=True):
        image.refresh_from_db()
        alone = encoder.embed_one(decode_upload(photo_bytes(name)).image)
        assert float(image.embedding_vector @ alone) > 0.99999, name


def test_the_batch_size_does_not_change_the_stored_vectors(settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    images = [create(name) for name in NAMES]
    images_index(image_ids=[image.pk for image in images])
    grouped = {image.pk: image.embedding_vector for image in CatalogImage.objects.all()}

    settings.EMBEDDING_BATCH_SIZE = 16
    settings.EMBEDDING_SEED = 1  # another model id: every image is embedded again
    images_index(image_ids=[image.pk for image in images])
    settings.EMBEDDING_SEED = 0
    images_index(image_ids=[image.pk for image in images])

    for image in CatalogImage.objects.all():
        assert float(image.embedding_vector @ grouped[image.pk]) > 0.99999


def test_a_query_of_a_camera_sized_jpeg_finds_its_catalog_copy_with_the_same_vector():
    data = two_megapixel_jpeg()
    image, _ = services.image_create(file=ContentFile(data, name="big.jpg"))
    images_index(image_ids=[image.pk])
    image.refresh_from_db()

    outcome = search_similar(image_bytes=data, top_k=1)

    assert max(decode_upload(data).image.size) <= 1632 // 2  # decoded at a reduced scale
    assert [hit.id for hit in outcome.hits] == [image.pk]
    assert outcome.hits[0].score > 0.99999


def test_a_corrupt_picture_in_the_middle_fails_alone(groups_of_two):
    images = [create(name) for name in NAMES]
    broken = images[2]
    with open(broken.staged_file.path, "wb") as handle:
        handle.write(photo_bytes("rocket.jpg")[:500])

    report = images_index(image_ids=[image.pk for image in images])

    broken.refresh_from_db()
    assert (broken.status, broken.failure_kind) == (Status.FAILED, "permanent")
    assert sorted(report.indexed) == sorted(image.pk for image in images if image != broken)
    assert get_vector_store().count() == len(NAMES) - 1


def test_a_model_error_in_a_later_group_fails_only_that_image(groups_of_two, monkeypatch):
    images = [create(name) for name in NAMES]
    culprit = images[3]  # astronaut (512 x 512, decoded at 256 x 256), in the second group
    embed_batch = ImageEncoder.embed_batch

    def fails_on_astronaut(self, batch, batch_size=None):
        if any(image.size == (256, 256) for image in batch):
            raise RuntimeError("out of memory in the convolution")
        return embed_batch(self, batch, batch_size)

    monkeypatch.setattr(ImageEncoder, "embed_batch", fails_on_astronaut)
    report = images_index(image_ids=[image.pk for image in images])

    culprit.refresh_from_db()
    assert sorted(report.indexed) == sorted(image.pk for image in images if image != culprit)
    assert (culprit.status, culprit.failure_kind) == (Status.FAILED, "transient")
    assert "out of memory in the convolution" in culprit.failure_reason
    assert not culprit.is_published


def test_a_group_is_published_while_the_model_embeds_the_next(groups_of_two, monkeypatch):
    from catalog.hosting.storage import StorageImageHost

    images = [create(name) for name in NAMES[:4]]
    first_group_published = threading.Event()
    published = []
    publish = StorageImageHost.publish

    def publish_and_say(self, **kwargs):
        hosted = publish(self, **kwargs)
        published.append(kwargs["image_id"])
        if len(published) == 2:
            first_group_published.set()
        return hosted

    embed_batch = ImageEncoder.embed_batch
    calls, waited = [], []

    def second_group_waits(self, batch, batch_size=None):
        calls.append(len(batch))
        if len(calls) == 2:  # a run that publishes only after the model would wait in vain
            waited.append(first_group_published.wait(timeout=30))
        return embed_batch(self, batch, batch_size)

    monkeypatch.setattr(StorageImageHost, "publish", publish_and_say)
    monkeypatch.setattr(ImageEncoder, "embed_batch", second_group_waits)
    report = images_index(image_ids=[image.pk for image in images])

    assert waited == [True]
    assert calls == [2, 2]
    assert sorted(report.indexed) == sorted(image.pk for image in images)


def test_pictures_are_decoded_on_a_thread_of_their_own(monkeypatch):
    threads = []
    decode = indexing.decode_upload

    def decode_and_say(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(indexing, "decode_upload", decode_and_say)
    images_index(image_ids=[create(name).pk for name in NAMES[:2]])

    assert len(threads) == 2
    assert all(name.startswith("index-decode") for name in threads)
    assert threading.current_thread().name not in threads
