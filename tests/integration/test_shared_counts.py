"""With a shared cache (CACHE_URL), the tag counts a web process serves follow what a real
worker process indexes at once, not after the cache's timeout."""

from __future__ import annotations

import pytest

from tests.catalog.test_searchable_counts import listed, redis_cache
from tests.conftest import photo_file
from tests.integration.test_worker import _worker_log, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_an_image_a_worker_indexes_counts_at_once_in_the_web_process(
    start_worker, own_redis, settings, staff_client, client
):
    settings.CACHES = redis_cache(own_redis.url)
    settings.SEARCHABLE_COUNTS_CACHE_SECONDS = 3600  # only the worker's change can refresh them
    worker = start_worker(CACHE_URL=own_redis.url)
    assert listed(client) == {}  # counted, and cached

    answer = staff_client.post("/api/images/", {"image": photo_file("coffee.png"), "tags": "Food"})
    assert answer.status_code == 201, answer.content
    assert wait_for_status(answer.json()["id"]) == "indexed", _worker_log(worker)
    assert listed(client) == {"food": 1}
