"""Catalog sync end to end with real processes: a feed whose pictures a web server on
127.0.0.1 serves, synced by the command; a real Celery worker (Redis) indexes the items;
search finds them with their external ids, links and metadata; a second sync downloads
nothing."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from bench.picture_server import PictureServer as FeedPictureServer
from bench.picture_server import picture
from catalog.models import CatalogImage
from tests.conftest import b64

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ITEMS = ["mug", "cup", "bowl"]


def wait_until_indexed(count: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    indexed = 0
    while time.monotonic() < deadline:
        indexed = CatalogImage.objects.filter(status="indexed").count()
        if indexed >= count:
            break
        time.sleep(0.5)
    return indexed


def test_a_synced_feed_is_indexed_by_a_worker_and_searched_by_item(
    worker, client, loopback_allowed, tmp_path
):
    with FeedPictureServer() as server:
        for seed, name in enumerate(ITEMS):
            server.files[f"/{name}.png"] = picture(seed)
        feed = tmp_path / "feed.csv"
        feed.write_text(
            "external_id,image,title,link_url,metadata.colour\n"
            + "".join(
                f"{name},{server.url(f'/{name}.png')},A {name},https://shop.example/{name},red\n"
                for name in ITEMS
            )
        )
        out = io.StringIO()
        call_command("sync_catalog", str(feed), stdout=out, stderr=io.StringIO())
        assert "created 3" in out.getvalue()
        assert wait_until_indexed(3) == 3, worker.log_path.read_text()

        results = client.post(
            "/api/search/", {"image": b64(picture(1)), "top_k": 3}, content_type="application/json"
        ).json()["results"]
        first = results[0]
        assert (first["external_id"], first["title"], first["link_url"]) == (
            "cup",
            "A cup",
            "https://shop.example/cup",
        )
        assert first["metadata"] == {"colour": "red"}

        server.forget_requests()
        out = io.StringIO()
        call_command("sync_catalog", str(feed), stdout=out, stderr=io.StringIO())
        assert "unchanged 3" in out.getvalue()
        assert (server.statuses, server.body_bytes) == ([304, 304, 304], 0)
