"""Items of an outside catalog, kept by their external id: the upsert every door shares.

An item (a shop's product, a museum's object) is named by `external_id` and shows as one
or more catalog images, one per picture. The upsert takes the item as its source says it
is now and makes the catalog match, doing heavy work only where something changed:

- a picture is fetched conditionally (the ETag and Last-Modified of the last fetch), and
  one whose bytes the item already holds is neither stored, published nor embedded again;
- a change of title, tags, link or metadata re-indexes from the cached embedding (the
  vector store's metadata follows; no model runs);
- pictures the item no longer lists are deactivated, never deleted (`deactivated_by_source`),
  and activated again if it lists them again, unless a curator deactivated them.

It runs in two steps so that catalog sync can fetch and decode pictures on many threads
while one thread writes: `picture_resolve` (network and decoding, no database) and
`item_apply` (database only). `item_upsert` does both, for a single item (the API).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog import services
from catalog.enqueue import enqueue_indexing, enqueue_unpublishing
from catalog.item_fields import (
    clean_external_id,
    clean_link_url,
    clean_metadata,
    clean_title,
)
from catalog.models import CatalogImage
from catalog.searchable_counts import searchable_counts_changed
from search.decoding import decode_upload
from search.fetching import FetchPolicy, fetch_if_changed
from search.imaging import ImageRejected
from search.tags import normalize_tags


class ItemChangedMeanwhile(Exception):
    """A picture the item held when its bytes were skipped was deleted before the write."""

    code = "item_changed"
    detail = "The item changed while this request ran (a picture was deleted); send it again."


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ItemFields:
    """An item's fields, cleaned: build it with `ItemFields.cleaned`."""

    external_id: str
    title: str = ""
    tags: tuple[str, ...] = ()
    link_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # None: new pictures are active, and existing ones keep their flag (a picture its source
    # had dropped is activated again). True/False: every picture of the item, as a person
    # decides it (the API's `is_active`).
    is_active: bool | None = None

    @classmethod
    def cleaned(
        cls,
        *,
        external_id: object,
        title: object = "",
        tags: str | Iterable[str] = (),
        link_url: object = "",
        metadata: object = None,
        is_active: bool | None = None,
    ) -> ItemFields:
        """Raises InvalidItemField or InvalidTags for a value no image may hold."""
        return cls(
            external_id=clean_external_id(external_id, required=True),
            title=clean_title(title),
            tags=tuple(normalize_tags(tags)),
            link_url=clean_link_url(link_url),
            metadata=clean_metadata(metadata),
            is_active=is_active,
        )

    def values(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "tags": list(self.tags),
            "link_url": self.link_url,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class PictureSource:
    """One picture of an item: its bytes (an upload), or where to fetch it (`url`)."""

    data: bytes | None = None
    url: str = ""
    name: str = ""  # how reports name it: a file name, or the URL


@dataclass(frozen=True)
class KnownCopy:
    """What the catalog holds of a picture fetched from a URL before."""

    sha256: str
    etag: str
    last_modified: str


@dataclass(frozen=True)
class ResolvedPicture:
    """A picture's bytes as far as they were needed: `checked` is None when the item
    already holds them (the server answered 304, or the bytes hash the same)."""

    sha256: str
    checked: services.CheckedPicture | None
    url: str = ""
    etag: str = ""
    last_modified: str = ""
    downloaded_bytes: int = 0


@dataclass
class UpsertResult:
    outcome: Outcome
    images: list[CatalogImage]  # the item's pictures as listed, in that order
    changed: list[str]  # what changed: "pictures", "title", "is_active"…
    created: int = 0  # pictures stored and queued for embedding
    deactivated: int = 0  # pictures the item no longer lists
    downloaded_bytes: int = 0


def known_copies(external_ids: Iterable[str]) -> dict[tuple[str, str], KnownCopy]:
    """(external id, source URL) -> the copy last fetched from there, for conditional
    fetches; one query for a whole feed's batch."""
    rows = (
        CatalogImage.objects.filter(external_id__in=list(external_ids))
        .exclude(source_url="")
        .order_by("-is_active", "-id")  # an active copy wins over one replaced since
        .values_list("external_id", "source_url", "sha256", "source_etag", "source_last_modified")
    )
    copies: dict[tuple[str, str], KnownCopy] = {}
    for external_id, url, sha256, etag, last_modified in rows:
        copies.setdefault((external_id, url), KnownCopy(sha256, etag, last_modified))
    return copies


def item_hashes(external_ids: Iterable[str]) -> dict[str, set[str]]:
    """external id -> the hashes of the pictures it holds (active or not)."""
    hashes: dict[str, set[str]] = {}
    rows = CatalogImage.objects.filter(external_id__in=list(external_ids))
    for external_id, sha256 in rows.values_list("external_id", "sha256"):
        hashes.setdefault(external_id, set()).add(sha256)
    return hashes


def picture_resolve(
    source: PictureSource,
    *,
    known: KnownCopy | None,
    held: set[str],
    policy: FetchPolicy,
) -> ResolvedPicture:
    """Fetch (conditionally) and decode what is new of one picture; no database access, so
    any thread may run it. `held`: the hashes of the pictures the item holds. Raises
    ImageRejected, with the codes of every other door, for a picture that cannot be used."""
    if source.url:
        fetched = fetch_if_changed(
            source.url,
            policy=policy,
            etag=known.etag if known else "",
            last_modified=known.last_modified if known else "",
        )
        if fetched.data is None:  # 304: the copy the catalog holds is current
            assert known is not None
            return ResolvedPicture(
                sha256=known.sha256,
                checked=None,
                url=source.url,
                etag=fetched.etag or known.etag,
                last_modified=fetched.last_modified or known.last_modified,
            )
        data, validators = fetched.data, (fetched.etag, fetched.last_modified)
    else:
        data, validators = source.data or b"", ("", "")
    sha256 = hashlib.sha256(data).hexdigest()
    checked = None
    if sha256 not in held:
        name = source.name or source.url.rsplit("/", 1)[-1]
        checked = services.CheckedPicture(data=data, decoded=decode_upload(data), filename=name)
    return ResolvedPicture(
        sha256=sha256,
        checked=checked,
        url=source.url,
        etag=validators[0],
        last_modified=validators[1],
        downloaded_bytes=len(data) if source.url else 0,
    )


@dataclass
class QueuedWork:
    """The indexing and unpublishing upserts ask for, sent together by `send`: a sync sends
    many rows' at once, so that indexing embeds them in batches (INDEX_BATCH_SIZE), not one
    task a picture. Rows never sent (the process died first) are pending without
    `queued_at`, which the outbox sweep sends."""

    to_index: list[int] = field(default_factory=list)
    to_unpublish: list[int] = field(default_factory=list)

    def send(self) -> None:
        if self.to_index or self.to_unpublish:
            searchable_counts_changed()
            enqueue_indexing(self.to_index)
            enqueue_unpublishing(self.to_unpublish)
        self.to_index, self.to_unpublish = [], []


def item_apply(
    *,
    fields: ItemFields,
    pictures: Sequence[ResolvedPicture],
    dry_run: bool = False,
    work: QueuedWork | None = None,
) -> UpsertResult:
    """Make the catalog hold the item as `fields` and `pictures` describe it.

    With `dry_run`, nothing is written: the result says what would be done. The indexing
    and unpublishing it needs go to `work` for the caller to send, or, without one, are
    queued once the write commits. Raises StagingUnavailable when a new picture cannot be
    stored (nothing of that picture is).
    """
    try:
        return _apply(fields, pictures, dry_run=dry_run, work=work)
    except IntegrityError:
        # The same item upserted at the same moment by another door: theirs is committed
        # now, so this run compares against it.
        return _apply(fields, pictures, dry_run=dry_run, work=work)


def _apply(
    fields: ItemFields,
    pictures: Sequence[ResolvedPicture],
    *,
    dry_run: bool,
    work: QueuedWork | None,
) -> UpsertResult:
    rows = list(
        CatalogImage.objects.filter(external_id=fields.external_id)
        .defer("embedding")
        .order_by("id")
    )
    by_hash = {row.sha256: row for row in rows}
    listed: dict[str, ResolvedPicture] = {}
    for picture in pictures:
        listed.setdefault(picture.sha256, picture)  # a picture listed twice is one picture
    downloaded = sum(picture.downloaded_bytes for picture in pictures)
    changed: list[str] = []
    wanted = fields.values()
    to_index: list[int] = []
    to_unpublish: list[int] = []
    created = deactivated = 0
    images: list[CatalogImage] = []

    with transaction.atomic():
        for sha256, picture in listed.items():
            row = by_hash.get(sha256)
            if row is None:
                if picture.checked is None:  # held when resolved, deleted since
                    raise ItemChangedMeanwhile(ItemChangedMeanwhile.detail)
                created += 1
                if dry_run:
                    continue
                row, _ = services.image_create_checked(
                    picture=picture.checked,
                    title=fields.title,
                    tags=fields.tags,
                    is_active=fields.is_active is not False,
                    enqueue=False,
                    item={
                        "external_id": fields.external_id,
                        "link_url": fields.link_url,
                        "metadata": fields.metadata,
                        **_source_of(picture),
                    },
                )
                to_index.append(row.pk)
                images.append(row)
                continue
            images.append(row)
            updates = {name: value for name, value in wanted.items() if getattr(row, name) != value}
            active = _active_after(row, fields)
            if active != row.is_active:
                updates |= {"is_active": active, "deactivated_by_source": False}
            changed += [n for n in updates if n not in changed and n != "deactivated_by_source"]
            source = _source_of(picture) if picture.url else {}
            bookkeeping = {k: v for k, v in source.items() if getattr(row, k) != v}
            if dry_run or not (updates or bookkeeping):
                continue
            _save(row, {**updates, **bookkeeping})
            if updates:
                to_index.append(row.pk)
                if not row.is_active:
                    to_unpublish.append(row.pk)

        for row in rows:
            if row.sha256 in listed or not row.is_active:
                continue
            deactivated += 1  # the source no longer lists this picture
            if not dry_run:
                _save(row, {"is_active": False, "deactivated_by_source": True})
                to_index.append(row.pk)
                to_unpublish.append(row.pk)

        if created or deactivated:
            changed.insert(0, "pictures")
        if not dry_run:
            queued = work or QueuedWork()
            queued.to_index += to_index
            queued.to_unpublish += to_unpublish
            if work is None:
                queued.send()

    if not rows:
        changed = []  # a new item: everything is new, nothing "changed"
    return UpsertResult(
        outcome=Outcome.CREATED if not rows else Outcome.UPDATED if changed else Outcome.UNCHANGED,
        images=images,
        changed=changed,
        created=created,
        deactivated=deactivated,
        downloaded_bytes=downloaded,
    )


def _active_after(row: CatalogImage, fields: ItemFields) -> bool:
    if fields.is_active is not None:
        return fields.is_active
    # Listed by its source: active again if the source had dropped it, else as it is.
    return True if row.deactivated_by_source else row.is_active


def _source_of(picture: ResolvedPicture) -> dict[str, str]:
    return {
        "source_url": picture.url,
        "source_etag": picture.etag,
        "source_last_modified": picture.last_modified,
    }


def _save(row: CatalogImage, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = timezone.now()
    row.save(update_fields=[*values, "updated_at"])


def item_upsert(
    *,
    fields: ItemFields,
    pictures: Sequence[PictureSource],
    policy: FetchPolicy | None = None,
    dry_run: bool = False,
) -> UpsertResult:
    """`picture_resolve` then `item_apply`, for one item (the API's upsert).

    The pictures are fetched at once, on up to SYNC_FETCH_CONCURRENCY threads, so an item's
    slow hosts cost one deadline, not one each. Raises ImageRejected for a picture that
    cannot be used (nothing of the item changes; the detail says which picture after the
    first), and StagingUnavailable when a new one cannot be stored."""
    policy = policy or FetchPolicy.for_feeds()
    copies = known_copies([fields.external_id])
    held = item_hashes([fields.external_id]).get(fields.external_id, set())

    def resolve(numbered: tuple[int, PictureSource]) -> ResolvedPicture:
        number, source = numbered
        known = copies.get((fields.external_id, source.url)) if source.url else None
        try:
            return picture_resolve(source, known=known, held=held, policy=policy)
        except ImageRejected as exc:
            if number == 0:
                raise
            raise ImageRejected(exc.code, f"Picture {number + 1}: {exc.detail}") from None

    threads = max(1, min(len(pictures), settings.SYNC_FETCH_CONCURRENCY))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="item-upsert") as pool:
        resolved = list(pool.map(resolve, enumerate(pictures)))
    return item_apply(fields=fields, pictures=resolved, dry_run=dry_run)
