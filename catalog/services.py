"""Curation writes: creating, editing, activating and deleting catalog images.

Admin, API and commands come through here. The work that runs in a worker (indexing,
reindex jobs, recovery, maintenance) is in catalog.pipeline, which may call these
functions; this module never imports the pipeline, and starts work in a worker only
through catalog.enqueue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.enqueue import (
    after_commit,
    enqueue_hosted_image_removal,
    enqueue_index_removal,
    enqueue_indexing,
    enqueue_unpublishing,
)
from catalog.hosting import HOST_NAMES, ImageHostError, get_image_host
from catalog.item_fields import (
    InvalidItemField,
    clean_external_id,
    clean_link_url,
    clean_metadata,
)
from catalog.models import CatalogImage
from catalog.searchable_counts import searchable_counts_changed
from search.decoding import decode_upload
from search.imaging import DecodedImage, read_limited
from search.tags import normalize_tags
from search.vectorstores import get_vector_store

logger = logging.getLogger(__name__)
Status = CatalogImage.Status
_CATALOG_ID = re.compile(r"[1-9][0-9]{0,18}")  # a vector's id is its image's


class StagingUnavailable(Exception):
    """The upload could not be stored for the worker (staging storage unreachable).

    Nothing was saved: no row points at a missing file, and the client is told to send
    the picture again.
    """

    code = "staging_unavailable"

    def __init__(self, cause: Exception):
        self.detail = (
            f"The picture could not be stored for indexing ({type(cause).__name__}: {cause}); "
            "nothing was saved. Send it again in a minute."
        )
        super().__init__(self.detail)


@dataclass(frozen=True)
class CheckedPicture:
    """An upload read (capped) and decoded as every door does, not stored yet."""

    data: bytes
    decoded: DecodedImage
    filename: str


def picture_check(file: File) -> CheckedPicture:
    """Read and decode `file`; raises ImageRejected when it is not an acceptable image.

    Separate from storing it (`image_create_checked`), so that a bulk upload can decode
    outside the short transaction that stores each picture with its job's progress.
    """
    data = read_limited(file, max_bytes=settings.IMAGE_MAX_BYTES)
    return CheckedPicture(data=data, decoded=decode_upload(data), filename=file.name or "")


def image_create(
    *,
    file: File,
    title: str = "",
    tags: str | Iterable[str] = (),
    is_active: bool = True,
    enqueue: bool = True,
    item: dict | None = None,
) -> tuple[CatalogImage, bool]:
    """Add a picture to the catalog and queue its indexing once the row is committed.

    Returns (image, created). The same bytes uploaded again return the existing image.
    Raises InvalidTags for a tag no search could ask for, ImageRejected when the file is
    not an acceptable image, StagingUnavailable when it cannot be stored for the worker.
    Bulk importers pass enqueue=False and call `enqueue_indexing` with many ids, to embed
    in batches. `item`: as for `image_create_checked`, its values cleaned here.
    """
    tags = normalize_tags(tags)
    item = _cleaned_item(item)
    return image_create_checked(
        picture=picture_check(file),
        title=title,
        tags=tags,
        is_active=is_active,
        enqueue=enqueue,
        item=item,
    )


def _cleaned_item(item: dict | None) -> dict:
    """An item's own fields (admin's add form) cleaned as every door cleans them."""
    if not item:
        return {}
    return {
        "external_id": clean_external_id(item.get("external_id", "")),
        "link_url": clean_link_url(item.get("link_url", "")),
        "metadata": clean_metadata(item.get("metadata") or {}),
    }


def image_create_checked(
    *,
    picture: CheckedPicture,
    title: str = "",
    tags: str | Iterable[str] = (),
    is_active: bool = True,
    enqueue: bool = True,
    item: dict | None = None,
) -> tuple[CatalogImage, bool]:
    """`image_create` for a picture `picture_check` has read and decoded.

    `item`: the outside catalog's fields of a picture of one of its items (external_id,
    link_url, metadata, source_*), cleaned by the caller (catalog.items). The same bytes are
    then the same image only within that item: items may share a picture.
    """
    tags = normalize_tags(tags)
    decoded, data = picture.decoded, picture.data
    item = item or {}
    same_bytes = CatalogImage.objects.filter(sha256=decoded.sha256)
    if item.get("external_id"):
        same_bytes = same_bytes.filter(external_id=item["external_id"])
    existing = same_bytes.first()
    if existing:
        return existing, False

    stem = Path(picture.filename).stem
    image = CatalogImage(
        # An item's title is its source's, even empty; an upload's falls back to its name.
        title=(title or ("" if item else stem.replace("_", " ").replace("-", " "))).strip()[:200],
        tags=tags,
        is_active=is_active,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.extension,
        **item,
    )
    try:
        with transaction.atomic():
            # Staged (STAGING_STORAGE), not published: the request stays fast whatever
            # the image host does, and any worker machine can read it.
            try:
                image.staged_file.save(f"upload.{decoded.extension}", ContentFile(data), save=False)
            except Exception as exc:  # OSError, or an object store client's own errors
                raise StagingUnavailable(exc) from exc
            image.save()
    except IntegrityError:
        # Someone uploaded the same bytes at the same moment; theirs won.
        image.staged_file.delete(save=False)
        existing = same_bytes.first()
        if existing is None:
            raise
        return existing, False
    if enqueue:
        enqueue_indexing([image.pk])
    return image, True


def image_update(
    *,
    image: CatalogImage,
    title: str | None = None,
    tags: str | Iterable[str] | None = None,
    is_active: bool | None = None,
    link_url: str | None = None,
    metadata: dict | None = None,
    external_id: str | None = None,
) -> CatalogImage:
    """Change what curators control; the vector store follows after commit.

    Raises InvalidTags or InvalidItemField (catalog.item_fields) before changing anything.
    A person's choice of `is_active` is theirs: a source that lists the picture again does
    not undo it (see CatalogImage.deactivated_by_source).
    """
    # Every value is cleaned before any is set: a refusal changes nothing.
    tags = None if tags is None else normalize_tags(tags)
    link_url = None if link_url is None else clean_link_url(link_url)
    metadata = None if metadata is None else clean_metadata(metadata)
    if external_id is not None:
        external_id = clean_external_id(external_id)
        image_move_check(image=image, external_id=external_id)
        image.external_id = external_id
    if tags is not None:
        image.tags = tags
    if link_url is not None:
        image.link_url = link_url
    if metadata is not None:
        image.metadata = metadata
    if title is not None:
        image.title = title.strip()[:200]
    if is_active is not None:
        image.is_active = is_active
        image.deactivated_by_source = False
    image.save(
        update_fields=[
            "title",
            "tags",
            "link_url",
            "metadata",
            "external_id",
            "is_active",
            "deactivated_by_source",
            "updated_at",
        ]
    )
    searchable_counts_changed()
    # Re-indexing reuses the cached embedding: it refreshes metadata, or removes the
    # vector of an image that was deactivated (and publishes one activated again).
    enqueue_indexing([image.pk])
    if not image.is_active:
        enqueue_unpublishing([image.pk])
    return image


def image_move_check(*, image: CatalogImage, external_id: str) -> None:
    """Refuses to move `image` where the same bytes already are: into an item that holds
    them, or (no external id) among uploads that hold them."""
    if external_id == image.external_id:
        return
    same = CatalogImage.objects.filter(sha256=image.sha256, external_id=external_id)
    other = same.exclude(pk=image.pk).first()
    if other is not None:
        where = f"item {external_id!r}" if external_id else "the uploaded pictures"
        raise InvalidItemField(
            "invalid_external_id",
            "external_id",
            f"The same picture is already in {where} as image {other.pk}; edit that one.",
        )


def images_set_active(*, images: Iterable[CatalogImage], is_active: bool) -> int:
    """Activate or deactivate many images. Search results check the flag in the database,
    so a deactivated image leaves them at once; its vector and its hosted files go in the
    background (`images_unpublish`), and activating publishes it again."""
    ids = [image.pk for image in images]
    CatalogImage.objects.filter(pk__in=ids).update(
        is_active=is_active, deactivated_by_source=False, updated_at=timezone.now()
    )
    searchable_counts_changed()
    enqueue_indexing(ids)
    if not is_active:
        enqueue_unpublishing(ids)
    return len(ids)


def images_unpublish(*, image_ids: Sequence[int]) -> list[int]:
    """Take inactive images off the image host: their public URLs stop serving the
    original and the thumbnail. Returns the ids unpublished.

    The original is kept, privately, in the staging storage (the staged copy if it is
    still there, else the host's, read back), which is what indexing publishes again when
    the image is activated. The row forgets its URLs in a conditional update (still
    inactive, still at that key) before the hosted files are deleted, so it never points
    at files that are gone, and an image activated meanwhile stays published. Raises
    ImageHostError or StagingUnavailable for the task's retry: until one succeeds the image
    stays published, and nothing is lost.
    """
    unpublished = []
    rows = CatalogImage.objects.filter(
        pk__in=image_ids, is_active=False, published_at__isnull=False
    )
    for row in rows.defer("embedding"):
        host_name, key = row.image_host, row.hosted_key
        kept_now = "" if row.staged_file else _keep_original(row)
        now = timezone.now()
        forgot = CatalogImage.objects.filter(
            pk=row.pk, is_active=False, image_host=host_name, hosted_key=key
        ).update(
            staged_file=row.staged_file.name,
            image_host="",
            hosted_key="",
            image_url="",
            thumbnail_url="",
            published_at=None,
            updated_at=now,
        )
        if not forgot:  # activated (or deleted) meanwhile: it stays as it is
            if kept_now:
                row.staged_file.storage.delete(kept_now)
            continue
        unpublished.append(row.pk)
        if not key:
            continue
        try:
            hosted_image_remove(host_name=host_name, key=key)
        except ImageHostError:
            logger.warning("Could not remove %s from %s now; queued.", key, host_name)
            enqueue_hosted_image_removal(host_name, key)
    return unpublished


def _keep_original(row: CatalogImage) -> str:
    """Copy the host's original of `row` into the staging storage; returns its name there."""
    data = get_image_host(row.image_host).read(row.hosted_key)
    try:
        row.staged_file.save(f"upload.{row.format or 'bin'}", ContentFile(data), save=False)
    except Exception as exc:  # OSError, or an object store client's own errors
        raise StagingUnavailable(exc) from exc
    return row.staged_file.name


def image_delete(*, image: CatalogImage) -> None:
    """Delete the row; once that is committed, its vector, hosted files and staged copy."""
    vector_id, staged = image.vector_id, image.staged_file
    with transaction.atomic():
        _forget_as_nearest(image)
        image.delete()
    searchable_counts_changed()
    enqueue_index_removal([vector_id])
    if image.hosted_key:
        enqueue_hosted_image_removal(image.image_host, image.hosted_key)
    if staged:
        after_commit(staged.storage.delete, staged.name)


def _forget_as_nearest(image: CatalogImage) -> int:
    """Before `image` is deleted: the images whose nearest it was lose that record, and are
    checked again at their next indexing (a reindex), which finds their next nearest
    (catalog.pipeline.duplicates)."""
    return CatalogImage.objects.filter(nearest_image=image).update(
        nearest_image=None, nearest_similarity=None, duplicate_checked_at=None
    )


def images_retry(*, images: Iterable[CatalogImage], enqueue: bool = True) -> int:
    """Queue images for another indexing attempt (failed, stuck, or missing from the store).

    Indexed rows keep their status: the task re-upserts them from their cached embedding.
    """
    ids = [image.pk for image in images]
    CatalogImage.objects.filter(pk__in=ids).exclude(status=Status.INDEXED).update(
        status=Status.PENDING,
        failure_reason="",
        failure_kind="",
        auto_retries=0,  # a curator's retry starts the automatic ones afresh
        queued_at=None,
        updated_at=timezone.now(),
    )
    if enqueue:
        enqueue_indexing(ids)
    return len(ids)


def hosted_image_remove(*, host_name: str, key: str) -> bool:
    """Remove a published original and its thumbnail, unless a row still points at them.

    The removal runs late (a queued task, a retry): by then another row may use the same key
    (older storage keys were shared by identical bytes). Returns whether it removed them.
    A key of a shape the host never makes for the catalog (another object of its bucket,
    a path out of it) is refused with an error in the log: the task's arguments come from
    the broker, and whoever can write there must not delete anything else.
    """
    host = get_image_host(host_name) if host_name in HOST_NAMES else None
    if host is None or not host.owns(key):
        logger.error(
            "Refused to delete %r from image host %r: not a key the catalog makes there.",
            key,
            host_name,
        )
        return False
    if CatalogImage.objects.filter(image_host=host_name, hosted_key=key).exists():
        logger.info("Kept hosted image %s on %s: a catalog row still uses it.", key, host_name)
        return False
    host.delete(key)
    return True


def vectors_remove(*, vector_ids: Sequence[str]) -> None:
    """Remove the vectors of deleted images.

    The ids come from the broker: one that is not a catalog id, or whose image still
    exists and is active, is refused with an error in the log (an active image's vector is
    the indexing pipeline's to keep or remove).
    """
    ids = [str(vector_id) for vector_id in vector_ids]
    ours = [vector_id for vector_id in ids if _CATALOG_ID.fullmatch(vector_id)]
    active = CatalogImage.objects.filter(pk__in=[int(i) for i in ours], is_active=True)
    live = {str(pk) for pk in active.values_list("pk", flat=True)}
    refused = [vector_id for vector_id in ids if vector_id not in ours or vector_id in live]
    if refused:
        logger.error(
            "Refused to remove vectors %r: not a catalog image's vector, or its image is "
            "still active.",
            refused,
        )
    removable = [vector_id for vector_id in ours if vector_id not in live]
    if removable:
        get_vector_store().delete(removable)
