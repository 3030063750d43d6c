"""Keep the vector store in line with the database, which is the truth.

`index_rebuild_from_cache` refills a store from the embeddings cached on the rows, without
running the model (moving from the local store to Pinecone is one call of it);
`index_reconcile` finds and optionally repairs differences between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from catalog import services
from catalog.models import CatalogImage, ReconcileRun
from catalog.pipeline.indexing import vector_record
from catalog.searchable_counts import searchable_counts_changed
from search.embedding import EmbeddingOptions, model_id_for
from search.vectorstores import get_vector_store

Status = CatalogImage.Status
REBUILD_BATCH_SIZE = 200


@dataclass
class RebuildReport:
    upserted: int = 0
    without_cache: list[int] = field(default_factory=list)  # queued for the worker instead
    stale_removed: int = 0


@dataclass
class ReconcileReport:
    missing: list[int] = field(default_factory=list)  # indexed in the database, not in the store
    orphaned: list[str] = field(default_factory=list)  # in the store, no active catalog row
    requeued: list[int] = field(default_factory=list)  # missing and without a usable cache

    @property
    def in_sync(self) -> bool:
        return not self.missing and not self.orphaned


def _cached_rows(model_id: str):
    """Rows whose vector can be rebuilt without the worker: embedded with this model and
    already published (an unpublished row still needs the worker's publishing step)."""
    return CatalogImage.objects.filter(
        is_active=True,
        embedding__isnull=False,
        embedding_model=model_id,
        published_at__isnull=False,
    ).order_by("pk")


def index_rebuild_from_cache(
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Upsert every active image's cached embedding into the configured store.

    Rows cached with another model, never embedded or not yet published are queued for
    the worker instead;
    vectors with no active row are removed, so the store ends as a copy of the database.
    """
    report = RebuildReport()
    model_id = model_id_for(EmbeddingOptions.from_settings())
    store = get_vector_store()
    rows = _cached_rows(model_id)
    if on_start:
        on_start(rows.count())
    batch: list[CatalogImage] = []
    for row in rows.iterator(chunk_size=REBUILD_BATCH_SIZE):
        batch.append(row)
        if len(batch) == REBUILD_BATCH_SIZE:
            report.upserted += _upsert_rows(store, batch, model_id, on_progress)
            batch = []
    if batch:
        report.upserted += _upsert_rows(store, batch, model_id, on_progress)

    # The store first, then the database: a vector written after the listing is not in it,
    # so it cannot be taken for stale; a row deactivated after it is seen inactive below.
    # (The other order removed images indexed between the two reads.)
    in_store = store.ids()
    active_ids = set(CatalogImage.objects.filter(is_active=True).values_list("pk", flat=True))
    cached_ids = set(rows.values_list("pk", flat=True))
    report.without_cache = sorted(active_ids - cached_ids)
    if report.without_cache:
        services.images_retry(
            images=CatalogImage.objects.filter(pk__in=report.without_cache).only("pk")
        )
    stale = in_store - {str(pk) for pk in active_ids}
    if stale:
        store.delete(sorted(stale))
    report.stale_removed = len(stale)
    return report


def _upsert_rows(store, rows: list[CatalogImage], model_id: str, on_progress) -> int:
    store.upsert(vector_record(row, row.embedding_vector, model_id) for row in rows)
    # Rows that had failed only because the store was unreachable are indexed now.
    ids = [row.pk for row in rows]
    unindexed = CatalogImage.objects.filter(pk__in=ids).exclude(status=Status.INDEXED)
    newly_indexed = unindexed.update(
        status=Status.INDEXED,
        failure_reason="",
        indexed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if newly_indexed:
        searchable_counts_changed()
    if on_progress:
        on_progress(len(rows))
    return len(rows)


def index_reconcile(*, fix: bool = False) -> ReconcileReport:
    """Compare database and store; with `fix`, upsert what is missing and delete orphans.

    Pinecone is eventually consistent: a vector upserted a moment ago may not be listed yet
    and shows as missing. Fixing it only upserts it again, which is harmless.
    """
    store = get_vector_store()
    # The store before the database, as in index_rebuild_from_cache: an image indexed
    # between the reads shows as missing (upserted again, harmless), never as orphaned.
    in_store = store.ids()
    active = CatalogImage.objects.filter(is_active=True)
    indexed_ids = {
        str(pk) for pk in active.filter(status=Status.INDEXED).values_list("pk", flat=True)
    }
    active_ids = {str(pk) for pk in active.values_list("pk", flat=True)}
    report = ReconcileReport(
        missing=sorted(int(pk) for pk in indexed_ids - in_store),
        orphaned=sorted(in_store - active_ids),
    )
    ReconcileRun.objects.create(
        missing=len(report.missing), orphaned=len(report.orphaned), fixed=fix
    )
    if not fix:
        return report
    if report.orphaned:
        store.delete(report.orphaned)
    model_id = model_id_for(EmbeddingOptions.from_settings())
    rows = list(_cached_rows(model_id).filter(pk__in=report.missing))
    if rows:
        store.upsert(vector_record(row, row.embedding_vector, model_id) for row in rows)
    report.requeued = sorted(set(report.missing) - {row.pk for row in rows})
    if report.requeued:
        services.images_retry(images=CatalogImage.objects.filter(pk__in=report.requeued))
    return report


def index_compact(*, rebuild: bool = False) -> str:
    """Build or merge the local store's approximate index now (LOCAL_STORE_INDEX), or
    remove it in exact mode; says what was done, in one line. Safe to run twice and from
    several processes at once (a second one finds the first running and does nothing)."""
    from search.vectorstores.local import LocalVectorStore

    store = get_vector_store()
    if not isinstance(store, LocalVectorStore):
        return f"the {store.name} store keeps its own index: nothing to do"
    return store.compact(rebuild=rebuild).message


def index_recall_check(*, sample: int = 200) -> str:
    """Recall@10 of the local store's approximate index on `sample` of its own vectors,
    against the exact scan, in one line (what `vectorstore_compact --check` prints)."""
    from search.vectorstores.local import LocalVectorStore
    from search.vectorstores.local.approximate.recall import check_recall

    store = get_vector_store()
    if not isinstance(store, LocalVectorStore):
        return f"the {store.name} store keeps its own index: nothing to check"
    report = check_recall(store.path, store.dimension, sample=sample)
    if report is None:
        return "no approximate index in use: queries scan every vector exactly (nothing to check)"
    return report.message
