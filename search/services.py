"""Find the catalog images most similar to a query image."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings

from catalog.selectors import searchable_image_embedding, searchable_images_by_ids
from search.decoding import decode_upload
from search.embedding import EmbeddingOptions, get_encoder, model_id_for
from search.vectorstores import VectorFilter, get_vector_store

# Asked of the vector store beyond top_k: room for 10 vectors of images the database does
# not show (deleted, deactivated or being reindexed since), plus 1 for the image searched by,
# which a search by catalog id leaves out of its own results.
SPARE_MATCHES = 10 + 1
# Results are per item (an outside catalog's product with several pictures is one result),
# so several matches may make one result: while they do, the store is asked again for
# CANDIDATE_GROWTH times more, up to MAX_CANDIDATES (Pinecone answers at most 10,000).
CANDIDATE_GROWTH = 4
MAX_CANDIDATES = 2000
RANDOM_WEIGHTS_WARNING = (
    "EMBEDDING_WEIGHTS=random: the model is untrained, so similarity scores are not "
    "meaningful. Configure IMAGENET1K_V1 or a weights file for real results."
)


@dataclass(frozen=True)
class SearchHit:
    id: int
    title: str
    image_url: str
    thumbnail_url: str
    score: float  # cosine similarity
    # The result is this picture: its item's best match (per-item searches), or itself.
    external_id: str = ""
    link_url: str = ""  # http(s) or empty: catalog.item_fields allows nothing else
    metadata: dict = field(default_factory=dict)

    @property
    def item_key(self) -> str:
        """What makes one result: the outside item, or the picture when it has none."""
        return f"item:{self.external_id}" if self.external_id else f"image:{self.id}"

    @property
    def similarity(self) -> float:
        """The score as a percentage with one decimal, clamped to 0-100."""
        return round(min(max(self.score, 0.0), 1.0) * 100, 1)


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[SearchHit]
    model_id: str
    took_ms: float
    warning: str | None


class QueryImageUnavailable(Exception):
    """A catalog image asked to search by cannot be used; `code` says why."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def search_similar(
    *,
    image_bytes: bytes,
    top_k: int,
    where: VectorFilter | None = None,
    min_similarity: float = 0.0,
    per_picture: bool = False,
) -> SearchOutcome:
    """Decode, embed and look up `image_bytes`; raises ImageRejected for bad input.

    Matches whose `similarity` is below `min_similarity` (0-100) are left out. One result
    per item, its best-matching picture; `per_picture`: every picture its own result.
    """
    started = time.perf_counter()
    options = EmbeddingOptions.from_settings()
    decoded = decode_upload(image_bytes, options=options, max_pixels=settings.SEARCH_MAX_PIXELS)
    encoder = get_encoder(options)
    vector = encoder.embed_one(decoded.image)
    return _lookup(
        vector,
        top_k,
        where,
        options,
        started=started,
        min_similarity=min_similarity,
        per_picture=per_picture,
    )


def search_similar_to_catalog_image(
    *,
    image_id: int,
    top_k: int,
    where: VectorFilter | None = None,
    min_similarity: float = 0.0,
    per_picture: bool = False,
) -> SearchOutcome:
    """Images like catalog image `image_id`, from its stored embedding: no upload, no model.

    The image itself is left out of the results, and so is the rest of its item (other
    views of the same product are not "similar products"), unless `per_picture`.
    """
    started = time.perf_counter()
    options = EmbeddingOptions.from_settings()
    model_id = model_id_for(options)
    embedding = searchable_image_embedding(image_id)
    if embedding is None:
        # Hidden images (pending, failed, deactivated) get the answer of an unknown id, so
        # nobody can tell which hidden ids exist.
        raise QueryImageUnavailable(
            "image_not_found", f"No searchable catalog image has id {image_id}."
        )
    vector, embedded_with, external_id = embedding
    # A public image embedded with other weights (the model changed, a reindex is under
    # way): saying so tells nothing about hidden images.
    if vector is None or embedded_with != model_id:
        raise QueryImageUnavailable(
            "image_not_indexed",
            f"Catalog image {image_id} is not indexed with the current model yet; "
            "try again once it is, or search with the picture itself.",
        )
    return _lookup(
        vector,
        top_k,
        where,
        options,
        started=started,
        exclude_image=image_id,
        exclude_item="" if per_picture else external_id,
        min_similarity=min_similarity,
        per_picture=per_picture,
    )


def _lookup(
    vector,
    top_k: int,
    where,
    options: EmbeddingOptions,
    *,
    started: float,
    exclude_image: int | None = None,
    exclude_item: str = "",
    min_similarity: float = 0.0,
    per_picture: bool = False,
) -> SearchOutcome:
    """Top `top_k` searchable (active, indexed) catalog images for `vector`.

    The store is asked for more than `top_k` because vectors of images deleted,
    deactivated or being reindexed may still be there; the database decides what is shown.
    """
    store = get_vector_store()
    asked = top_k + SPARE_MATCHES
    while True:
        matches = store.query(vector, top_k=asked, where=where)
        hits = _hits(matches, exclude_image=exclude_image, exclude_item=exclude_item)
        if not per_picture:
            hits = _best_per_item(hits)
        # Compared with the percentage users see, so "at least 90" keeps a 90.0 shown.
        kept = [hit for hit in hits if hit.similarity >= min_similarity]
        exhausted = len(matches) < asked or asked >= MAX_CANDIDATES
        if len(kept) >= top_k or exhausted or len(kept) < len(hits):
            break  # enough, nothing more to ask for, or the rest are below the minimum
        asked = min(asked * CANDIDATE_GROWTH, MAX_CANDIDATES)
    return SearchOutcome(
        hits=kept[:top_k],
        model_id=model_id_for(options),
        took_ms=round((time.perf_counter() - started) * 1000, 1),
        warning=RANDOM_WEIGHTS_WARNING if options.is_random else None,
    )


def _hits(matches, *, exclude_image: int | None, exclude_item: str) -> list[SearchHit]:
    """The matches the database shows (searchable images), best first, as results."""
    matches = [match for match in matches if match.id != str(exclude_image)]
    summaries = searchable_images_by_ids(match.id for match in matches)
    hits = [
        SearchHit(
            id=summary.id,
            title=summary.title,
            image_url=summary.image_url,
            thumbnail_url=summary.thumbnail_url,
            score=match.score,
            external_id=summary.external_id,
            link_url=summary.link_url,
            metadata=summary.metadata,
        )
        for match in matches
        if (summary := summaries.get(int(match.id))) is not None
    ]
    if exclude_item:
        hits = [hit for hit in hits if hit.external_id != exclude_item]
    return hits


def _best_per_item(hits: list[SearchHit]) -> list[SearchHit]:
    """The first (best) hit of each item, in order: `hits` come best first."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.item_key not in seen:
            seen.add(hit.item_key)
            best.append(hit)
    return best
