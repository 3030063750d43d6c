"""The indexing pipeline: the work that runs in Celery workers, and the sweeps that recover it.

indexing (embed, publish, upsert, record), duplicates (each image's nearest, recorded while
indexing), jobs (reindex jobs, in batches), bulk_uploads (staged uploads imported by a
worker), index_maintenance (reconcile the vector store, rebuild it from cached embeddings),
recovery (the sweeps beat runs: the outbox, stuck rows, stalled jobs) and periodic (when
each periodic task last ran). The tasks themselves stay in catalog.tasks, so their Celery
names do not change; work is queued only through catalog.enqueue.

These modules may import catalog.services, catalog.selectors, catalog.importing, the models
and the search library; nothing below them (services, selectors, importing) imports them.
"""
