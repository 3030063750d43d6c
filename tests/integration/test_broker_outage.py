"""The broker goes away and comes back: uploads stay quick, and are indexed soon after."""

from __future__ import annotations

import os
import signal
import time

import pytest

from catalog import services
from catalog.models import CatalogImage
from tests.conftest import photo_file
from tests.integration.test_worker import _worker_log, wait_until_settled

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


@pytest.fixture
def redis_url(own_redis):
    """The workers and this process use the test's own Redis, which the test stops."""
    return own_redis.url


def upload(name: str) -> tuple[CatalogImage, float]:
    started = time.monotonic()
    image, created = services.image_create(file=photo_file(name))
    assert created
    return image, time.monotonic() - started


def test_uploads_made_while_the_broker_was_down_are_indexed_soon_after_it_returns(
    own_redis, start_worker, settings
):
    # The default sweep keeps "within 2 minutes of the broker's return"; the test is faster.
    assert settings.OUTBOX_SWEEP_SECONDS <= 60
    assert settings.CELERY_BEAT_SCHEDULE["send-unqueued"]["schedule"] <= 60
    worker = start_worker(beat=True, OUTBOX_SWEEP_SECONDS="3")

    own_redis.stop()
    uploaded = [upload(name) for name in NAMES]
    for image, seconds in uploaded:
        assert seconds < 5, f"an upload took {seconds:.1f}s while the broker was down"
        image.refresh_from_db()
        assert (image.status, image.queued_at) == ("pending", None)

    own_redis.start()
    back = time.monotonic()
    ids = [image.pk for image, _ in uploaded]
    statuses = wait_until_settled(ids, timeout=120)
    assert set(statuses.values()) == {"indexed"}, _worker_log(worker)
    assert time.monotonic() - back < 120
    assert CatalogImage.objects.filter(pk__in=ids, queued_at__isnull=True).count() == 0


def test_an_upload_answers_within_seconds_when_the_broker_hangs(own_redis, start_worker):
    start_worker()
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        image, seconds = upload("coffee.png")
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert seconds < 8, f"the upload took {seconds:.1f}s"
    image.refresh_from_db()
    assert (image.status, image.queued_at) == ("pending", None)
