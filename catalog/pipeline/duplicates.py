"""Near-duplicates: each image's nearest other active image, recorded when it is indexed.

The image's vector is in the store by then, so its nearest neighbour costs a query to the
store and no model run; an indexing batch asks for all its images in one `query_many`,
which the local store answers reading its rows once. What is recorded is the neighbour
and their similarity (a percentage on the scale of search's `similarity`, not rounded);
whether that is a possible duplicate is decided when it is read
(catalog.selectors.duplicate_flag), so a changed DUPLICATE_SIMILARITY, or a neighbour
deactivated since, applies at once without reindexing.

A newer image closer to an older one than the older one's recorded neighbour replaces that
record too, so a pair is found whichever of the two was indexed first.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import CatalogImage
from search.vectorstores import VectorMatch, get_vector_store

# The image itself, its nearest neighbour, and room for vectors of images deactivated or
# deleted a moment ago that the store still holds (the database has the last word).
CANDIDATES = 8


def images_record_nearest(*, vectors: Mapping[int, np.ndarray], model_id: str) -> None:
    """Record each image's nearest other active image, found with its vector `vectors[id]`.

    Only vectors of `model_id` are compared: while a reindex moves the catalog to other
    weights, the store also holds vectors whose scores mean something else. Raises
    VectorStoreError when the store cannot be queried; the rows stay unchecked, so the
    indexing task's retry checks them.
    """
    if not vectors:
        return
    found = get_vector_store().query_many(
        np.stack(list(vectors.values())), top_k=CANDIDATES, where={"model": [model_id]}
    )
    candidates = dict(zip(vectors, found, strict=True))
    active = _active_ids({match.id for matches in candidates.values() for match in matches})
    now = timezone.now()
    with transaction.atomic():  # one commit for the batch's two updates per image
        for pk, matches in candidates.items():
            nearest = next(
                (m for m in matches if m.id != str(pk) and m.id in active),
                None,
            )
            _record(pk, nearest, checked_at=now)


def percent(score: float) -> float:
    """A cosine score on search's 0-100 scale, unrounded: near-duplicates differ from
    look-alikes in the decimals (with random weights, in the second and third)."""
    return min(max(score, 0.0), 1.0) * 100


def _active_ids(vector_ids: set[str]) -> set[str]:
    wanted = [int(id_) for id_ in vector_ids if id_.isdigit()]
    rows = CatalogImage.objects.filter(pk__in=wanted, is_active=True)
    return {str(pk) for pk in rows.values_list("pk", flat=True)}


def _record(pk: int, nearest: VectorMatch | None, *, checked_at) -> None:
    if nearest is None:
        CatalogImage.objects.filter(pk=pk).update(
            nearest_image=None, nearest_similarity=None, duplicate_checked_at=checked_at
        )
        return
    other, similarity = int(nearest.id), percent(nearest.score)
    CatalogImage.objects.filter(pk=pk).update(
        nearest_image_id=other, nearest_similarity=similarity, duplicate_checked_at=checked_at
    )
    # The neighbour's record, when this image is closer to it than what it has (or what it
    # has is gone or deactivated). One conditional update: nothing to read first.
    CatalogImage.objects.filter(pk=other).filter(
        Q(nearest_similarity__isnull=True)
        | Q(nearest_similarity__lt=similarity)
        | Q(nearest_image__isnull=True)
        | Q(nearest_image__is_active=False)
    ).update(nearest_image_id=pk, nearest_similarity=similarity)
