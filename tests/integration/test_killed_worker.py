"""A picture that gets its worker killed fails alone, and the worker keeps serving."""

from __future__ import annotations

import pytest

from catalog import services
from catalog.enqueue import enqueue_indexing
from tests.conftest import photo_file
from tests.integration.test_worker import _worker_log, wait_until_settled

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def test_a_picture_that_kills_its_worker_fails_alone_and_its_batch_is_indexed(start_worker):
    images = [
        services.image_create(file=photo_file(name), enqueue=False)[0]
        for name in ("astronaut.png", "chelsea.png", "coffee.png")
    ]
    culprit = images[1]
    worker = start_worker(
        app="tests.integration.killer_app", KILL_SHA256=culprit.sha256, INDEX_BATCH_SIZE="3"
    )
    enqueue_indexing([image.pk for image in images])  # one batch of three

    statuses = wait_until_settled([image.pk for image in images], timeout=240)

    log = _worker_log(worker)
    assert statuses == {images[0].pk: "indexed", culprit.pk: "failed", images[2].pk: "indexed"}, log
    culprit.refresh_from_db()
    assert "worker was killed" in culprit.failure_reason
    assert "WORKER_MAX_MEMORY_MB" in culprit.failure_reason
    assert log.count("exited with 'signal 9 (SIGKILL)'") == 3, log  # twice in batch, once alone

    # The worker is still up and serving.
    assert worker.poll() is None
    another, _ = services.image_create(file=photo_file("rocket.jpg"))
    assert wait_until_settled([another.pk], timeout=120) == {another.pk: "indexed"}, log
