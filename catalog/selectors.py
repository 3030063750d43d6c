"""Reads of the catalog. Other packages (search, frontend) use these, never the models."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)

from catalog.models import CatalogImage
from catalog.searchable_counts import searchable_image_count as searchable_image_count
from catalog.searchable_counts import searchable_tag_counts as searchable_tag_counts


@dataclass(frozen=True)
class ImageSummary:
    """What a search result needs to show an image; read fresh from the database."""

    id: int
    title: str
    image_url: str
    thumbnail_url: str
    # The outside catalog's item, when the image is one of its pictures (else "" and {}).
    external_id: str = ""
    link_url: str = ""
    metadata: dict = field(default_factory=dict)


def _catalog(*, public_only: bool) -> QuerySet[CatalogImage]:
    images = CatalogImage.objects.defer("embedding")
    if public_only:
        # What search can show: deactivated, failed and unfinished images stay private.
        return images.filter(is_active=True, status=CatalogImage.Status.INDEXED)
    return with_duplicate_flag(images)  # staff see it


def image_list(*, status: str | None = None, public_only: bool = False) -> QuerySet[CatalogImage]:
    images = _catalog(public_only=public_only)
    if status:
        images = images.filter(status=status)
    return images


def image_get(image_id: int, *, public_only: bool = False) -> CatalogImage | None:
    return _catalog(public_only=public_only).filter(pk=image_id).first()


def _searchable() -> QuerySet[CatalogImage]:
    """What search may show or search by: active and indexed. A row being reindexed, or
    failed after it was indexed, may still have a vector in the store; it stays out."""
    return CatalogImage.objects.filter(is_active=True, status=CatalogImage.Status.INDEXED)


SUMMARY_FIELDS = (
    "id", "title", "image_url", "thumbnail_url", "external_id", "link_url", "metadata"
)  # fmt: skip


def searchable_images_by_ids(ids: Iterable[int | str]) -> dict[int, ImageSummary]:
    """Summaries of the searchable (active, indexed) images among `ids`; others are left out."""
    wanted = [int(i) for i in ids if str(i).isdigit()]
    rows = _searchable().filter(pk__in=wanted).only(*SUMMARY_FIELDS)
    summaries = {}
    for row in rows:
        summaries[row.pk] = ImageSummary(
            id=row.pk,
            title=str(row),
            image_url=row.image_url,
            thumbnail_url=row.thumbnail_url,
            external_id=row.external_id,
            link_url=row.link_url,
            metadata=row.metadata,
        )
    return summaries


def searchable_image_embedding(image_id: int) -> tuple[np.ndarray | None, str, str] | None:
    """(cached embedding, model id, external id) of a searchable (active, indexed) image;
    None when there is no such image, or it is hidden: the two are not told apart."""
    fields = ("embedding", "embedding_model", "external_id")
    row = _searchable().filter(pk=image_id).only(*fields).first()
    return None if row is None else (row.embedding_vector, row.embedding_model, row.external_id)


def catalog_status_counts() -> dict[str, int]:
    counts = dict.fromkeys(CatalogImage.Status.values, 0)
    for row in CatalogImage.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def images_needing_index(*, statuses: Iterable[str]) -> QuerySet[CatalogImage]:
    return CatalogImage.objects.filter(status__in=list(statuses)).order_by("id")


def index_counts() -> dict:
    """Active indexed images in the database next to the vector store's own count."""
    from search.vectorstores import VectorStoreError, get_vector_store

    indexed = CatalogImage.objects.filter(
        is_active=True, status=CatalogImage.Status.INDEXED
    ).count()
    counts: dict = {"indexed": indexed, "backend": settings.VECTOR_STORE}
    try:
        counts["vectors"] = get_vector_store().count()
    except VectorStoreError as exc:
        counts["error"] = str(exc)
    return counts


def all_tags() -> list[str]:
    """Every tag in use, sorted; distinct tag lists first, so the scan stays small."""
    tags: set[str] = set()
    for tag_list in CatalogImage.objects.values_list("tags", flat=True).distinct():
        tags.update(tag_list or ())
    return sorted(tags)


def with_tag(images: QuerySet[CatalogImage], tag: str) -> QuerySet[CatalogImage]:
    # Tags are a JSON list of plain strings, so '"tag"' occurs in the JSON text exactly when
    # the tag is in the list; unlike JSONField's `contains`, this works on SQLite too.
    return images.filter(tags__icontains=json.dumps(tag))


def image_neighbours(image: CatalogImage, *, top_k: int) -> list[tuple[CatalogImage, float]] | None:
    """The active images nearest to `image`, with cosine scores; None if it has no embedding."""
    from search.vectorstores import VectorStoreError, get_vector_store

    vector = image.embedding_vector
    if vector is None:
        return None
    try:
        matches = get_vector_store().query(vector, top_k=top_k + 1)
    except VectorStoreError:
        return None
    scores = {int(m.id): m.score for m in matches if m.id.isdigit() and int(m.id) != image.pk}
    rows = CatalogImage.objects.filter(pk__in=scores, is_active=True).defer("embedding")
    return sorted(((row, scores[row.pk]) for row in rows), key=lambda pair: -pair[1])[:top_k]


def duplicate_flag() -> Q:
    """A possible duplicate: an active image whose recorded nearest image is active too and
    at least DUPLICATE_SIMILARITY percent similar. Decided at each read, so a changed
    setting applies at once, and deactivating either image of a pair clears both flags.

    The neighbour is looked at through EXISTS rather than a join: the database checks it
    only for the few rows past the similarity test, which keeps a 100,000-row admin list
    as quick as without the flag.
    """
    nearest_is_active = CatalogImage.objects.filter(pk=OuterRef("nearest_image_id"), is_active=True)
    return Q(
        Q(is_active=True, nearest_similarity__gte=settings.DUPLICATE_SIMILARITY),
        Exists(nearest_is_active),
    )


def with_duplicate_flag(images: QuerySet[CatalogImage]) -> QuerySet[CatalogImage]:
    """`images`, each with `possible_duplicate`, in the same query."""
    return images.annotate(
        possible_duplicate=Case(
            When(duplicate_flag(), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    )


def image_is_possible_duplicate(image: CatalogImage) -> bool:
    flag = getattr(image, "possible_duplicate", None)
    if flag is None:  # not read through with_duplicate_flag
        flag = CatalogImage.objects.filter(duplicate_flag(), pk=image.pk).exists()
    return flag


def duplicate_pairs() -> QuerySet[CatalogImage]:
    """Possible duplicates as pairs: each row with its `nearest_image`, most similar first.

    Both images are active. A pair recorded from both sides (A's nearest is B and B's is
    A) comes once, from the side with the lower id.
    """
    mutual_from_higher_id = Q(nearest_image__nearest_image=F("pk"), pk__gt=F("nearest_image"))
    return (
        CatalogImage.objects.filter(duplicate_flag())
        .exclude(mutual_from_higher_id)
        .select_related("nearest_image")
        .defer("embedding", "nearest_image__embedding")
        .order_by("-nearest_similarity", "pk")
    )


def last_reconcile():
    from catalog.models import ReconcileRun

    return ReconcileRun.objects.first()
