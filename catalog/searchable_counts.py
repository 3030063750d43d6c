"""What every view of the search page counts (the searchable images, and their tags with
how many images carry each), kept in the cache until the catalog changes.

Counted from the rows, tags take 0.15-0.2 s at 100,000 images (SQLite, PostgreSQL), and
the image count tens of milliseconds (bench/bench_tags.py): too much for every page view.
So the counts are cached under a version key, and every write that changes what they see (tags,
`is_active`, a status to or from indexed, a deletion) calls `searchable_counts_changed()`,
which sets a new version once its transaction commits: the next read counts afresh.

With a shared cache (CACHE_URL, Redis) every process and machine sees a new version at
once. With the per-process default, a process sees its own changes at once and others'
(the worker's indexing, seen by the web) within SEARCHABLE_COUNTS_CACHE_SECONDS, which also
bounds how long a change made behind the services' back (a shell, raw SQL) goes unseen.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count

from catalog.models import CatalogImage

logger = logging.getLogger(__name__)
T = TypeVar("T")

VERSION_KEY = "catalog:searchable-counts:version"
_counting = threading.Lock()  # one count at a time per process; other readers wait for it


def searchable_tag_counts() -> list[tuple[str, int]]:
    """(tag, how many searchable images carry it), by tag."""
    return _cached("tags", count_searchable_tags)


def searchable_image_count() -> int:
    return _cached("images", count_searchable_images)


def searchable_counts_changed() -> None:
    """Have the next read, after the current transaction commits, count afresh.

    Call it from every write that changes tags, `is_active`, a status to or from indexed,
    or deletes rows. Set after the commit, so that no reader can count the old rows under
    the new version; if the cache is down then, the old counts live out their timeout.
    """

    def bump() -> None:  # a real function: Django's error log needs a __qualname__
        cache.set(VERSION_KEY, _new_version(), None)

    transaction.on_commit(bump, robust=True)


def count_searchable_tags() -> list[tuple[str, int]]:
    """The tag counts from the database.

    SQLite and PostgreSQL unnest the JSON tag lists themselves (`json_each`,
    `jsonb_array_elements_text`): at 100,000 images that took 188 and 165 ms, against 464
    and 811 ms for grouping by tag list and summing here (bench/bench_tags.py), which
    other databases still do.
    """
    unnest = _UNNEST_TAGS.get(connection.vendor)
    if unnest is None:
        counts: dict[str, int] = {}
        for row in _searchable().values("tags").annotate(n=Count("id")):
            for tag in row["tags"] or ():
                counts[tag] = counts.get(tag, 0) + row["n"]
        return sorted(counts.items())
    table = connection.ops.quote_name(CatalogImage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT each_tag.value, COUNT(*) FROM {table} AS image, {unnest} "
            "WHERE image.is_active AND image.status = %s GROUP BY each_tag.value",
            [CatalogImage.Status.INDEXED],
        )
        # Sorted here: a database's collation may order tags otherwise than Python.
        return sorted((tag, int(count)) for tag, count in cursor.fetchall())


# One row per tag of each image, as a table expression `each_tag` with a `value` column.
_UNNEST_TAGS = {
    "sqlite": "json_each(image.tags) AS each_tag",
    "postgresql": "jsonb_array_elements_text(image.tags) AS each_tag(value)",
}


def count_searchable_images() -> int:
    return _searchable().count()


def _searchable():
    return CatalogImage.objects.filter(is_active=True, status=CatalogImage.Status.INDEXED)


def _cached(name: str, count: Callable[[], T]) -> T:
    """count(), at most once per version of the catalog in each process, and again after
    SEARCHABLE_COUNTS_CACHE_SECONDS."""
    version = _cache_call("get_or_set", VERSION_KEY, _new_version, None)
    if version is None:  # the cache is unreachable: count without it
        return count()
    key = f"catalog:searchable-counts:{version}:{name}"
    value = _cache_call("get", key)
    if value is None:
        with _counting:
            value = _cache_call("get", key)  # counted by another thread meanwhile?
            if value is None:
                value = count()
                _cache_call("set", key, value, settings.SEARCHABLE_COUNTS_CACHE_SECONDS)
    return value


def _new_version() -> str:
    # Random rather than counted: a version key the cache lost (evicted, restarted) starts
    # again without ever reusing a version whose counts may still be cached.
    return secrets.token_hex(8)


def _cache_call(operation: str, *args):
    """The cache's answer, or None when it failed: without Redis the page still counts."""
    try:
        return getattr(cache, operation)(*args)
    except Exception:  # each cache backend has its own errors (redis.ConnectionError, ...)
        logger.warning("The cache failed (%s); counting without it.", operation, exc_info=True)
        return None
