"""The indexing pipeline: one bad image fails alone; a picture that kills workers is found."""

from pathlib import Path

import pytest

from catalog.models import CatalogImage
from catalog.pipeline import indexing
from catalog.pipeline.indexing import images_index
from search.vectorstores import get_vector_store
from tests.catalog.test_services import create
from tests.conftest import photo_bytes

pytestmark = pytest.mark.django_db
Status = CatalogImage.Status


# --- One bad image fails alone ------------------------------------------------------------


def index_and_unstage(*names: str) -> list[CatalogImage]:
    """Indexed and published images, their staged uploads gone: only the host's copy is left."""
    images = [create(name) for name in names]
    images_index(image_ids=[image.pk for image in images])
    for image in images:
        image.refresh_from_db()
        assert image.status == Status.INDEXED and not image.staged_file
    return images


def test_an_unreadable_hosted_copy_fails_only_its_own_image(settings):
    good, bad = index_and_unstage("coffee.png", "chelsea.png")
    (settings.MEDIA_ROOT / bad.hosted_key).unlink()  # the host lost this one original
    settings.EMBEDDING_SEED = 1  # new weights: both must be embedded again from the host

    report = images_index(image_ids=[good.pk, bad.pk])

    good.refresh_from_db()
    bad.refresh_from_db()
    assert report.indexed == [good.pk]
    assert good.embedding_model == "resnet50/random-seed1"
    assert (bad.status, bad.failure_kind) == (Status.FAILED, "transient")
    assert "could not be read" in bad.failure_reason


def test_a_publish_failure_of_one_image_fails_only_that_image(settings):
    good, bad = create("coffee.png"), create("chelsea.png")
    assert good.sha256[:2] != bad.sha256[:2]
    # The host's folder for this one image is a file: its publish fails for real.
    (settings.MEDIA_ROOT / "catalog").mkdir(parents=True)
    (settings.MEDIA_ROOT / "catalog" / bad.sha256[:2]).write_text("")

    report = images_index(image_ids=[good.pk, bad.pk])

    good.refresh_from_db()
    bad.refresh_from_db()
    assert report.indexed == [good.pk]
    assert good.status == Status.INDEXED and good.is_published
    assert (bad.status, bad.failure_kind) == (Status.FAILED, "transient")
    assert "publish" in bad.failure_reason
    assert bad.staged_file and Path(bad.staged_file.path).exists()  # kept for the retry
    assert get_vector_store().ids() == {str(good.pk)}


def test_a_model_error_on_one_image_fails_only_that_image(monkeypatch):
    from search.embedding import ImageEncoder

    good, bad = create("coffee.png"), create("chelsea.png")
    embed_batch = ImageEncoder.embed_batch

    def fails_on_chelsea(self, images, batch_size=None):
        if any(image.size == (451, 300) for image in images):
            raise RuntimeError("out of memory in the convolution")
        return embed_batch(self, images, batch_size)

    monkeypatch.setattr(ImageEncoder, "embed_batch", fails_on_chelsea)
    report = images_index(image_ids=[good.pk, bad.pk])

    bad.refresh_from_db()
    assert report.indexed == [good.pk]
    assert (bad.status, bad.failure_kind) == (Status.FAILED, "transient")
    assert "out of memory in the convolution" in bad.failure_reason


def test_a_host_outage_for_every_image_still_fails_the_batch_for_a_retry(settings, tmp_path):
    from catalog.hosting import ImageHostError

    images = [create("coffee.png"), create("chelsea.png")]
    (tmp_path / "not-a-folder").write_text("")
    settings.MEDIA_ROOT = tmp_path / "not-a-folder" / "media"
    with pytest.raises(ImageHostError):
        images_index(image_ids=[image.pk for image in images])
    for image in images:
        image.refresh_from_db()
        assert (image.status, image.attempts) == (Status.PROCESSING, 0)


def test_a_corrupt_picture_is_a_permanent_failure():
    image = create()
    with open(image.staged_file.path, "wb") as broken:
        broken.write(photo_bytes()[:500])
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert (image.status, image.failure_kind) == (Status.FAILED, "permanent")


# --- A row deleted while its image is published ---------------------------------------------


def test_an_image_deleted_while_it_was_published_leaves_no_hosted_files(settings):
    from catalog import hosting
    from catalog.hosting.storage import StorageImageHost

    image = create()
    published = []

    class DeletedMeanwhile(StorageImageHost):
        def publish(self, **kwargs):
            hosted = super().publish(**kwargs)
            published.append(hosted.key)
            CatalogImage.objects.filter(pk=image.pk).delete()  # a curator deletes it now
            return hosted

    hosting._hosts.clear()
    host = hosting.get_image_host()
    hosting._hosts[next(iter(hosting._hosts))] = DeletedMeanwhile(
        "local", "default", host.thumbnail_size
    )

    report = images_index(image_ids=[image.pk])

    assert published, "the host published it"
    assert not (settings.MEDIA_ROOT / published[0]).exists()
    assert not list((settings.MEDIA_ROOT / "catalog").rglob("*.*"))
    assert get_vector_store().count() == 0
    assert report.indexed == []


# --- A picture that kills its worker ---------------------------------------------------------


def killed(image: CatalogImage, times: int) -> None:
    """The state a worker killed mid-run leaves: processing, with unfinished attempts."""
    CatalogImage.objects.filter(pk=image.pk).update(status=Status.PROCESSING, attempts=times)


def test_a_batch_that_killed_its_worker_twice_is_indexed_one_image_at_a_time(monkeypatch):
    from search.embedding import ImageEncoder

    images = [create(name) for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    for image in images:
        killed(image, times=2)
    sizes = []
    embed_batch = ImageEncoder.embed_batch
    monkeypatch.setattr(
        ImageEncoder,
        "embed_batch",
        lambda self, batch, batch_size=None: (
            sizes.append(len(batch)) or embed_batch(self, batch, batch_size)
        ),
    )

    report = images_index(image_ids=[image.pk for image in images])

    assert sorted(report.indexed) == sorted(image.pk for image in images)
    assert sizes == [1, 1, 1]
    assert set(CatalogImage.objects.values_list("attempts", flat=True)) == {0}


def test_an_image_that_killed_its_worker_while_alone_fails_with_the_reason():
    culprit, other = create("coffee.png"), create("chelsea.png")
    killed(culprit, times=3)  # twice in its batch, then once by itself
    killed(other, times=2)

    report = images_index(image_ids=[culprit.pk, other.pk])

    culprit.refresh_from_db()
    assert report.indexed == [other.pk]
    assert (culprit.status, culprit.failure_kind) == (Status.FAILED, "transient")
    assert "worker was killed" in culprit.failure_reason
    assert "WORKER_MAX_MEMORY_MB" in culprit.failure_reason


def test_indexing_counts_an_unfinished_attempt_until_the_image_settles(monkeypatch):
    image = create()
    seen = []
    original_embed = indexing._embed_rows

    def embed_and_look(*args):
        seen.append(CatalogImage.objects.get(pk=image.pk).attempts)
        return original_embed(*args)

    monkeypatch.setattr(indexing, "_embed_rows", embed_and_look)
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert seen == [1]
    assert image.attempts == 0
