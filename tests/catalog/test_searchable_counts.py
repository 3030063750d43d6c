"""The search page's counts (its catalog size, its tag toggles) and GET /api/tags/: read
from the database once per change of the catalog, and right again at once after every
write that changes them. Each test reads them before its change, so that a stale cached
answer fails."""

from __future__ import annotations

import re
import time

import pytest

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline import indexing
from catalog.pipeline.index_maintenance import index_rebuild_from_cache
from catalog.pipeline.indexing import images_index
from catalog.selectors import searchable_image_count, searchable_tag_counts
from tests.catalog.test_admin import LIST, act
from tests.conftest import TAGGED, photo_file

pytestmark = pytest.mark.django_db

TAGGED_COUNTS = {"animal": 1, "food": 1, "person": 1, "space": 2, "texture": 1}
ALL_TAGGED = (len(TAGGED), TAGGED_COUNTS)


def listed(client) -> dict[str, int]:
    """GET /api/tags/, as {tag: count}."""
    answer = client.get("/api/tags/")
    assert answer.status_code == 200
    return {row["tag"]: row["count"] for row in answer.json()["tags"]}


def shown(client) -> tuple[int, dict[str, int]]:
    """(catalog size, {tag: count}) as the search page shows them; the API agrees."""
    page = client.get("/").content.decode()
    size = int(re.search(r'data-catalog-size="(\d+)"', page).group(1))
    toggles = re.findall(r'value="([^"]+)"[^>]*> \1 \((\d+)\)', page)
    tags = {tag: int(count) for tag, count in toggles}
    assert listed(client) == tags
    return size, tags


def without(tag: str) -> tuple[int, dict[str, int]]:
    """The tagged catalog less the one image tagged `tag` alone."""
    return len(TAGGED) - 1, {t: n for t, n in TAGGED_COUNTS.items() if t != tag}


def redis_cache(location: str) -> dict:
    """CACHES for a Redis at `location`, as CACHE_URL configures it."""
    return {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}
    }


def test_the_counts_are_read_from_the_database_once_until_the_catalog_changes(
    tagged, client, django_assert_num_queries
):
    assert shown(client) == ALL_TAGGED
    with django_assert_num_queries(0):
        assert dict(searchable_tag_counts()) == TAGGED_COUNTS
        assert searchable_image_count() == len(TAGGED)


def test_a_tag_edit_in_the_admin_shows_at_once(
    tagged, client, admin_client, django_capture_on_commit_callbacks
):
    assert shown(client) == ALL_TAGGED
    coffee = tagged["coffee.png"]
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(
            f"{LIST}{coffee.pk}/change/",
            {"title": coffee.title, "tags": "Space, mug", "is_active": "on"},
        )
    assert answer.status_code == 302, answer.content[:500]
    assert shown(client) == (
        len(TAGGED),
        {"animal": 1, "mug": 1, "person": 1, "space": 3, "texture": 1},
    )


def test_deactivating_and_activating_in_the_admin_show_at_once(
    tagged, client, admin_client, django_capture_on_commit_callbacks
):
    assert shown(client) == ALL_TAGGED
    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, "deactivate", [tagged["rocket.jpg"]])
    assert shown(client) == (len(TAGGED) - 1, {**TAGGED_COUNTS, "space": 1})
    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, "activate", [tagged["rocket.jpg"]])
    assert shown(client) == ALL_TAGGED


def test_a_deleted_image_leaves_the_counts_at_once(
    tagged, client, staff_client, django_capture_on_commit_callbacks
):
    assert shown(client) == ALL_TAGGED
    with django_capture_on_commit_callbacks(execute=True):
        answer = staff_client.delete(f"/api/images/{tagged['brick.png'].pk}/")
    assert answer.status_code == 204
    assert shown(client) == without("texture")


def test_a_newly_indexed_image_counts_at_once(tagged, client, django_capture_on_commit_callbacks):
    assert shown(client) == ALL_TAGGED
    image, _ = services.image_create(file=photo_file("camera.png"), tags="space, person")
    assert shown(client) == ALL_TAGGED  # pending: not searchable yet
    with django_capture_on_commit_callbacks(execute=True):
        images_index(image_ids=[image.pk])
    assert shown(client) == (len(TAGGED) + 1, {**TAGGED_COUNTS, "person": 2, "space": 3})


@pytest.mark.django_db(transaction=True)  # committed as a worker commits: seen mid-run
def test_an_image_being_reembedded_leaves_the_counts_until_it_is_indexed_again(
    tagged, client, monkeypatch
):
    coffee = tagged["coffee.png"]
    CatalogImage.objects.filter(pk=coffee.pk).update(embedding_model="resnet50/other-weights")
    assert shown(client) == ALL_TAGGED
    seen = []
    embed = indexing._embed_rows

    def embed_and_look(*args):
        seen.append(shown(client))
        return embed(*args)

    monkeypatch.setattr(indexing, "_embed_rows", embed_and_look)
    images_index(image_ids=[coffee.pk])
    assert seen == [without("food")]
    assert shown(client) == ALL_TAGGED


def test_rebuilding_from_cache_counts_images_that_failed_for_the_store_at_once(
    tagged, client, django_capture_on_commit_callbacks
):
    # Embedded and published, then failed because the vector store was unreachable.
    CatalogImage.objects.filter(pk=tagged["chelsea.png"].pk).update(status="failed")
    assert shown(client) == without("animal")
    with django_capture_on_commit_callbacks(execute=True):
        index_rebuild_from_cache()
    assert shown(client) == ALL_TAGGED


def test_a_change_behind_the_services_back_shows_within_the_timeout(tagged, client, settings):
    settings.SEARCHABLE_COUNTS_CACHE_SECONDS = 1
    assert shown(client) == ALL_TAGGED
    CatalogImage.objects.filter(pk=tagged["coffee.png"].pk).update(is_active=False)
    assert shown(client) == ALL_TAGGED  # the cache does not know yet
    time.sleep(1.1)
    assert shown(client) == without("food")


def test_without_a_reachable_cache_the_counts_come_from_the_database(
    tagged, client, settings, django_capture_on_commit_callbacks
):
    settings.CACHES = redis_cache("redis://127.0.0.1:1/0")  # nothing listens there
    page = client.get("/")
    assert page.status_code == 200
    assert 'data-catalog-size="5"' in page.content.decode()
    assert 'value="food"> food (1)' in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        services.images_set_active(images=[tagged["coffee.png"]], is_active=False)
    assert 'value="food"' not in client.get("/").content.decode()


def test_the_database_counts_tags_as_the_rows_say(monkeypatch):
    from catalog import searchable_counts

    Status = CatalogImage.Status
    rows = [
        (["beach", "summer"], Status.INDEXED, True),
        (["beach"], Status.INDEXED, True),
        (["Zürich", "état", "a b", "2024"], Status.INDEXED, True),
        ([], Status.INDEXED, True),
        (["beach"], Status.INDEXED, False),  # inactive
        (["winter"], Status.PENDING, True),  # not searchable yet
        (["summer", "winter"], Status.FAILED, True),
    ]
    CatalogImage.objects.bulk_create(
        CatalogImage(sha256=f"{i:064x}", tags=tags, status=status, is_active=active)
        for i, (tags, status, active) in enumerate(rows)
    )
    expected = {"2024": 1, "Zürich": 1, "a b": 1, "beach": 2, "summer": 1, "état": 1}
    counted = searchable_counts.count_searchable_tags()  # in SQL on SQLite and PostgreSQL
    assert counted == sorted(expected.items())  # in Python's order, whatever the collation
    monkeypatch.setattr(searchable_counts, "_UNNEST_TAGS", {})  # other databases: in Python
    assert searchable_counts.count_searchable_tags() == counted
