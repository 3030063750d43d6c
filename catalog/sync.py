"""Catalog sync: make the catalog hold the items a feed lists (manage.py sync_catalog).

A feed (catalog.feeds) lists an outside catalog's items, one row each. Every row goes
through the upsert every door shares (catalog.items), so a sync does heavy work only where
something changed: pictures are fetched conditionally (a 304, or bytes the item already
holds, skip storing and embedding them), and a changed title or tag re-indexes from the
cached embedding. Running the same feed twice changes nothing the second time.

Pictures are fetched and decoded on SYNC_FETCH_CONCURRENCY threads while this thread
writes, in feed order: SQLite (and the on-commit queueing) wants one writing thread. At
most AHEAD_PER_THREAD rows per thread are fetched ahead of the row being written, so memory
stays bounded whatever the feed's size; the catalog's copies are looked up once per
LOOKUP_BATCH_ROWS rows.

A row that cannot be synced (no id, a bad URL, a picture refused with the codes of every
other door) is reported with its line and the rest goes on. With `prune`, active pictures
of items the feed no longer lists are deactivated, never deleted, and only when the feed
was read and synced well enough to say what it lists (see `_prune_refusal`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.enqueue import enqueue_indexing, enqueue_unpublishing
from catalog.feeds import Feed, FeedRow, picture_list, read_feed, read_picture_file
from catalog.item_fields import InvalidItemField, clean_external_id
from catalog.items import (
    ItemChangedMeanwhile,
    ItemFields,
    KnownCopy,
    PictureSource,
    QueuedWork,
    ResolvedPicture,
    item_apply,
    item_hashes,
    known_copies,
    picture_resolve,
)
from catalog.models import CatalogImage
from catalog.searchable_counts import searchable_counts_changed
from catalog.services import StagingUnavailable
from search.fetching import FetchPolicy
from search.imaging import ImageRejected
from search.tags import InvalidTags

LOOKUP_BATCH_ROWS = 100
AHEAD_PER_THREAD = 4
PRUNE_BATCH = 500  # pictures deactivated per transaction
FAILED = "failed"


@dataclass(frozen=True)
class RowResult:
    """What became of one row: `outcome` is created, updated, unchanged or failed (then
    `code` and `detail` say why)."""

    line: int
    external_id: str
    outcome: str
    changed: tuple[str, ...] = ()
    code: str = ""
    detail: str = ""


@dataclass
class SyncReport:
    feed: str
    dry_run: bool
    feed_bytes: int = 0
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    new_pictures: int = 0  # stored and queued for embedding
    downloaded_bytes: int = 0  # pictures' bytes; the feed's own are feed_bytes
    # external id -> how many of its pictures were (or, dry, would be) deactivated by --prune
    deactivated: dict[str, int] = field(default_factory=dict)
    unlisted: int = 0  # items the feed no longer lists, left active (no --prune)
    prune_refused: str = ""  # why --prune deactivated nothing
    failures: list[RowResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def synced(self) -> int:
        return self.created + self.updated + self.unchanged


@dataclass(frozen=True)
class _Item:
    """A row whose values are clean: its fields, and its pictures as written and where
    they are (a URL, or a file in a local feed's folder), the main one first."""

    line: int
    fields: ItemFields
    pictures: tuple[tuple[str, str | Path], ...]


class _PictureRefused(Exception):
    def __init__(self, written: str, error: ImageRejected, downloaded: int):
        super().__init__(error.detail)
        self.code = error.code
        self.detail = f"{written}: {error.detail}"
        self.downloaded = downloaded


def catalog_sync(
    *,
    source: str,
    format: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    on_start: Callable[[Feed], None] | None = None,
    on_row: Callable[[RowResult], None] | None = None,
) -> SyncReport:
    """Upsert every row of the feed at `source` (a path or an http(s) URL), then, with
    `prune`, deactivate the items it no longer lists. With `dry_run` nothing is written
    (pictures are still fetched, to tell a changed one from the same).

    Raises FeedUnreadable when the feed cannot be read (nothing is synced). `on_start` gets
    the feed once read; `on_row` each row's result, in feed order.
    """
    started, since = time.monotonic(), timezone.now()
    feed = read_feed(source, format=format)
    report = SyncReport(feed=source, dry_run=dry_run, feed_bytes=feed.size, rows=len(feed.rows))
    if on_start:
        on_start(feed)
    run = _Run(feed, report, dry_run=dry_run, on_row=on_row)
    run.sync_rows()
    refusal = _prune_refusal(report, run.unreadable_lines)
    if prune and refusal:
        report.prune_refused = refusal
    elif not refusal:
        unlisted = items_deactivate_unlisted(
            listed=run.listed, created_before=since, dry_run=dry_run or not prune
        )
        if prune:
            report.deactivated = unlisted
        else:
            report.unlisted = len(unlisted)
    report.seconds = time.monotonic() - started
    return report


def _prune_refusal(report: SyncReport, unreadable_lines: list[int]) -> str:
    """Why the feed cannot say which items it no longer lists, or "". A feed cut short,
    emptied by a broken export or whose pictures all failed must not deactivate the
    catalog; nor may a line that could not be read, whose item is not known."""
    if not report.synced:
        return (
            "no row of the feed was synced, and a feed that is empty or failed must never "
            "deactivate the catalog"
        )
    if unreadable_lines:
        lines = ", ".join(str(line) for line in unreadable_lines[:5])
        more = f" and {len(unreadable_lines) - 5} more" if len(unreadable_lines) > 5 else ""
        return (
            f"line(s) {lines}{more} could not be read, so the items they list are not known; "
            "fix them and sync again"
        )
    return ""


class _Run:
    def __init__(
        self,
        feed: Feed,
        report: SyncReport,
        *,
        dry_run: bool,
        on_row: Callable[[RowResult], None] | None,
    ) -> None:
        self.feed, self.report, self.dry_run, self.on_row = feed, report, dry_run, on_row
        self.listed: set[str] = set()  # every id the feed names, its row synced or not
        self.first_line: dict[str, int] = {}
        self.unreadable_lines: list[int] = []
        self.work = QueuedWork()  # sent a batch at a time: indexing embeds in batches

    def sync_rows(self) -> None:
        policy = FetchPolicy.for_feeds()
        threads = settings.SYNC_FETCH_CONCURRENCY
        window: deque[tuple[_Item | RowResult, Future[list[ResolvedPicture]] | None]] = deque()
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="catalog-sync")
        try:
            rows = self.feed.rows
            for start in range(0, len(rows), LOOKUP_BATCH_ROWS):
                batch = [self._prepare(row) for row in rows[start : start + LOOKUP_BATCH_ROWS]]
                ids = [item.fields.external_id for item in batch if isinstance(item, _Item)]
                copies, hashes = known_copies(ids), item_hashes(ids)
                for item in batch:
                    future = None
                    if isinstance(item, _Item):
                        held = hashes.get(item.fields.external_id, set())
                        future = executor.submit(_resolve, item, copies, held, policy)
                    window.append((item, future))
                    while len(window) > threads * AHEAD_PER_THREAD:
                        self._finish(*window.popleft())
            while window:
                self._finish(*window.popleft())
            self.work.send()
        finally:
            # Stopped early (Ctrl-C, a database error): what was not fetched yet never is.
            executor.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, row: FeedRow) -> _Item | RowResult:
        """The row's values cleaned, or why it cannot be synced (no network, no database)."""
        values = row.values
        if row.error:
            self.unreadable_lines.append(row.line)
            return _failed(row.line, "", "unreadable_row", f"The line cannot be read: {row.error}.")
        try:
            external_id = clean_external_id(values.get("external_id"), required=True)
        except InvalidItemField as exc:
            return _failed(row.line, "", exc.code, exc.detail)
        if external_id in self.first_line:
            return _failed(
                row.line,
                external_id,
                "duplicate_external_id",
                f"`external_id` {external_id} is on line {self.first_line[external_id]} "
                "already; an item takes one row (list its other pictures in "
                "additional_images).",
            )
        self.first_line[external_id] = row.line
        self.listed.add(external_id)  # a bad row still lists its item: never pruned
        try:
            fields = _fields(external_id, values)
            pictures = _pictures(self.feed, values)
        except (InvalidItemField, InvalidTags, ImageRejected) as exc:
            return _failed(row.line, external_id, exc.code, exc.detail)
        return _Item(line=row.line, fields=fields, pictures=pictures)

    def _finish(
        self, item: _Item | RowResult, future: Future[list[ResolvedPicture]] | None
    ) -> None:
        """Write one row, in feed order, once its pictures are fetched."""
        if isinstance(item, RowResult):
            self._record(item)
            return
        assert future is not None
        external_id = item.fields.external_id
        try:
            pictures = future.result()
        except _PictureRefused as exc:
            self.report.downloaded_bytes += exc.downloaded
            self._record(_failed(item.line, external_id, exc.code, exc.detail))
            return
        self.report.downloaded_bytes += sum(picture.downloaded_bytes for picture in pictures)
        try:
            result = item_apply(
                fields=item.fields, pictures=pictures, dry_run=self.dry_run, work=self.work
            )
            if len(self.work.to_index) >= settings.INDEX_BATCH_SIZE:
                self.work.send()
        except (StagingUnavailable, ItemChangedMeanwhile) as exc:
            self._record(_failed(item.line, external_id, exc.code, exc.detail))
            return
        self.report.new_pictures += result.created
        self._record(RowResult(item.line, external_id, str(result.outcome), tuple(result.changed)))

    def _record(self, result: RowResult) -> None:
        report = self.report
        if result.outcome == FAILED:
            report.failed += 1
            report.failures.append(result)
        else:
            setattr(report, result.outcome, getattr(report, result.outcome) + 1)
        if self.on_row:
            self.on_row(result)


def _failed(line: int, external_id: str, code: str, detail: str) -> RowResult:
    return RowResult(line, external_id, FAILED, code=code, detail=detail)


def _fields(external_id: str, values: dict) -> ItemFields:
    title, tags = values.get("title"), values.get("tags")
    if not (title is None or isinstance(title, str | int | float)):
        raise InvalidItemField("invalid_title", "title", "Send `title` as text.")
    if not (
        tags is None
        or isinstance(tags, str)
        or (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags))
    ):
        raise InvalidTags("Send `tags` as text separated by commas, or a list of strings.")
    return ItemFields.cleaned(
        external_id=external_id,
        title=title,
        tags=tags or (),
        link_url=values.get("link_url"),
        metadata=values.get("metadata"),
    )


def _pictures(feed: Feed, values: dict) -> tuple[tuple[str, str | Path], ...]:
    image = values.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ImageRejected(
            "missing_image",
            "`image` is empty; every item needs a picture (an http(s) URL, or a path "
            "relative to the feed).",
        )
    additional = picture_list(values.get("additional_images"))
    if additional is None:
        raise ImageRejected(
            "invalid_additional_images",
            "Send `additional_images` as a list of URLs or paths (in a CSV cell, separated "
            "by spaces or `|`).",
        )
    written = [image.strip(), *additional]
    return tuple((name, feed.picture_location(name)) for name in written)


def _resolve(
    item: _Item, copies: dict[tuple[str, str], KnownCopy], held: set[str], policy: FetchPolicy
) -> list[ResolvedPicture]:
    """The row's pictures fetched (conditionally) and decoded where new; runs on a fetch
    thread, so it reads no database."""
    external_id = item.fields.external_id
    resolved: list[ResolvedPicture] = []
    for written, where in item.pictures:
        try:
            if isinstance(where, Path):
                source = PictureSource(data=read_picture_file(where), name=where.name)
                known = None
            else:
                source = PictureSource(url=where)
                known = copies.get((external_id, where))
            resolved.append(picture_resolve(source, known=known, held=held, policy=policy))
        except ImageRejected as exc:
            downloaded = sum(picture.downloaded_bytes for picture in resolved)
            raise _PictureRefused(written, exc, downloaded) from None
    return resolved


def items_deactivate_unlisted(
    *, listed: Collection[str], created_before: datetime, dry_run: bool = False
) -> dict[str, int]:
    """Deactivate (never delete) the active pictures of items not in `listed`, as a source
    that dropped them does (`deactivated_by_source`: listed again, they come back).
    Pictures created from `created_before` on are left alone: another door added them
    while the feed was being synced. Returns external id -> pictures deactivated."""
    rows = (
        CatalogImage.objects.filter(is_active=True, created_at__lt=created_before)
        .exclude(external_id="")
        .values_list("pk", "external_id")
    )
    unlisted: dict[str, list[int]] = {}
    # Compared here, not with `NOT IN (...)`: a feed lists more ids than a query may carry.
    for pk, external_id in rows.iterator(chunk_size=2000):
        if external_id not in listed:
            unlisted.setdefault(external_id, []).append(pk)
    image_ids = [pk for pks in unlisted.values() for pk in pks]
    for start in range(0, 0 if dry_run else len(image_ids), PRUNE_BATCH):
        chunk = image_ids[start : start + PRUNE_BATCH]
        with transaction.atomic():
            CatalogImage.objects.filter(pk__in=chunk, is_active=True).update(
                is_active=False, deactivated_by_source=True, updated_at=timezone.now()
            )
            searchable_counts_changed()
            # As for any deactivation: indexing removes the vector, unpublishing the
            # hosted copies (catalog.items does the same for a picture an item drops).
            enqueue_indexing(chunk)
            enqueue_unpublishing(chunk)
    return {external_id: len(pks) for external_id, pks in sorted(unlisted.items())}
