"""Automatic recovery: transient failures are retried with a backoff, permanent ones never."""

import pytest

from catalog import services
from catalog.models import CatalogImage
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db
Status = CatalogImage.Status


def create(name="astronaut.png") -> CatalogImage:
    image, created = services.image_create(file=photo_file(name))
    assert created
    return image


# --- Failed images are retried automatically, transient ones only ----------------------------


def fail(image: CatalogImage, kind: str, minutes_ago: float) -> None:
    from datetime import timedelta

    from django.utils import timezone

    CatalogImage.objects.filter(pk=image.pk).update(
        status=Status.FAILED,
        failure_reason="The image host failed.",
        failure_kind=kind,
        updated_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_a_transient_failure_is_retried_after_a_backoff(django_capture_on_commit_callbacks):
    from catalog import recovery

    old, recent = create("coffee.png"), create("chelsea.png")
    fail(old, "transient", minutes_ago=6)
    fail(recent, "transient", minutes_ago=1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert recovery.images_retry_failed() == [old.pk]
    assert len(callbacks) == 1
    old.refresh_from_db()
    assert (old.status, old.auto_retries, old.failure_reason) == (Status.PENDING, 1, "")


def test_a_failed_image_is_retried_at_most_failed_retry_limit_times(settings):
    from catalog import recovery

    settings.FAILED_RETRY_LIMIT = 3
    image = create()
    for retries in range(3):
        fail(image, "transient", minutes_ago=5 * 2**retries + 1)
        assert recovery.images_retry_failed() == [image.pk]
    fail(image, "transient", minutes_ago=10_000)
    assert recovery.images_retry_failed() == []
    image.refresh_from_db()
    assert image.auto_retries == 3


def test_the_backoff_doubles_between_automatic_retries():
    from catalog import recovery

    image = create()
    fail(image, "transient", minutes_ago=6)
    assert recovery.images_retry_failed() == [image.pk]
    fail(image, "transient", minutes_ago=6)  # the second retry waits 10 minutes
    assert recovery.images_retry_failed() == []


def test_a_permanent_failure_is_never_retried_automatically():
    from catalog import recovery

    image = create()
    fail(image, "permanent", minutes_ago=10_000)
    assert recovery.images_retry_failed() == []


def test_an_indexed_image_starts_again_with_no_automatic_retries_used():
    from catalog import recovery

    image = create()
    fail(image, "transient", minutes_ago=6)
    recovery.images_retry_failed()
    services.images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert (image.status, image.auto_retries, image.failure_kind) == (Status.INDEXED, 0, "")
