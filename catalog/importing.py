"""Bulk import: catalog images created from sources (catalog.sources), their indexing
queued in batches, and waiting until it settles (import_images, load_demo_catalog, admin
bulk uploads). A source that cannot be read is a line in the report; the rest of the run
goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile

from catalog import services
from catalog.enqueue import enqueue_indexing
from catalog.models import CatalogImage
from catalog.sources import ImageSource, base_name
from search.imaging import ImageRejected


@dataclass
class ImportReport:
    created: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  # one per source already in the catalog
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[int]:
        """Every distinct image this import touched, in order: the same picture twice in one
        run is one image, and waiting for it twice would never end."""
        return list(dict.fromkeys(self.created + self.duplicates))


def images_import(
    sources: Iterable[ImageSource],
    *,
    tags: Iterable[str] = (),
    on_progress: Callable[[ImageSource], None] | None = None,
) -> ImportReport:
    """Create catalog rows for `sources` and queue their indexing in embedding batches.

    Each batch is queued as soon as it is staged, so the worker indexes while the rest
    are read. `tags` go on every image, in addition to each source's own. Whatever stops
    the run (Ctrl-C, a database error), the rows created until then are still queued.
    """
    report = ImportReport()
    tags = tuple(tags)
    queued: set[int] = set()

    def queue(at_least: int) -> None:
        # Duplicates are queued too: indexing is idempotent, and one may have failed before.
        waiting = [pk for pk in report.image_ids if pk not in queued]
        if waiting and len(waiting) >= at_least:
            enqueue_indexing(waiting)
            queued.update(waiting)

    try:
        for source in sources:
            _import_one(source, tags, report)
            queue(at_least=settings.INDEX_BATCH_SIZE)
            if on_progress:
                on_progress(source)
    finally:
        queue(at_least=1)
    return report


def _import_one(source: ImageSource, tags: tuple[str, ...], report: ImportReport) -> None:
    try:
        data = source.read()
        file = ContentFile(data, name=source.filename or base_name(source.name))
        image, created = services.image_create(
            file=file, title=source.title, tags=tags + source.tags, enqueue=False
        )
    except (ImageRejected, services.StagingUnavailable) as exc:
        report.rejected[source.name] = exc.detail
    except OSError as exc:
        report.rejected[source.name] = f"could not be read ({exc.strerror or exc})."
    else:
        (report.created if created else report.duplicates).append(image.pk)


def wait_until_settled(
    image_ids: Iterable[int],
    *,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
    poll_seconds: float = 0.25,
) -> dict[str, int]:
    """Block until every image is indexed or failed (or `timeout`); returns status counts.

    Each id counts once, and an image deleted meanwhile is not waited for.
    """
    settled_states = [CatalogImage.Status.INDEXED, CatalogImage.Status.FAILED]
    rows = CatalogImage.objects.filter(pk__in=set(image_ids))
    deadline = time.monotonic() + timeout
    while True:
        if on_progress:
            on_progress(rows.filter(status__in=settled_states).count())
        unsettled = rows.exclude(status__in=settled_states).exists()
        if not unsettled or time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for status in rows.values_list("status", flat=True):
                counts[status] = counts.get(status, 0) + 1
            return counts
        time.sleep(poll_seconds)
