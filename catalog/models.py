from __future__ import annotations

import secrets

import numpy as np
from django.db import models
from django.db.models import Q

from catalog.staging import StagingStorage


def _staging_path(instance: CatalogImage, filename: str) -> str:
    # Each upload its own key: an object store overwrites a key without a word, so two
    # uploads of the same bytes (racing each other, or one following a delete whose clean-up
    # has not run yet) must never share one, or one's clean-up would remove the other's copy.
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"{instance.sha256[:2]}/{secrets.token_hex(4)}-{instance.sha256}.{extension}"


class CatalogImage(models.Model):
    """One picture of the curated catalog; the truth the vector store indexes."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    class FailureKind(models.TextChoices):
        TRANSIENT = "transient", "Transient (retried automatically)"
        PERMANENT = "permanent", "Permanent (the picture is unusable)"

    # Kept until the worker has published the image to the host, then emptied. In the
    # `staging` storage (STAGING_STORAGE): a local folder, or object storage.
    staged_file = models.FileField(storage=StagingStorage(), upload_to=_staging_path, blank=True)
    format = models.CharField(max_length=10, blank=True, help_text="File extension: jpg, png…")
    title = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, help_text="A list of lower-case tags.")
    # Unique among uploads, and within one outside item (see Meta.constraints).
    sha256 = models.CharField(max_length=64, db_index=True, editable=False)
    # Upright size, after EXIF orientation: what people see.
    width = models.PositiveIntegerField(editable=False, default=0)
    height = models.PositiveIntegerField(editable=False, default=0)

    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    failure_reason = models.TextField(blank=True)
    # Transient failures (a host, store or worker fault) are retried automatically, up to
    # FAILED_RETRY_LIMIT times; permanent ones (the picture itself is bad) never are.
    failure_kind = models.CharField(max_length=10, choices=FailureKind.choices, blank=True)
    auto_retries = models.PositiveSmallIntegerField(default=0, editable=False)
    # When its indexing task was handed to the broker. A pending row without it was never
    # sent (the broker was down): the outbox sweep sends it again.
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Indexing runs started on the row and not finished: a worker killed mid-run leaves it
    # raised, which is how a picture that kills its worker is found. Reset when it settles.
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    embedding_model = models.CharField(max_length=100, blank=True)
    # float32 bytes; lets any vector store be rebuilt without running the model again.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    indexed_at = models.DateTimeField(null=True, blank=True)

    # Where the image is published (IMAGE_HOST); empty until the worker has done it.
    image_host = models.CharField(max_length=20, blank=True)
    hosted_key = models.CharField(max_length=500, blank=True)
    image_url = models.CharField(max_length=1000, blank=True)
    thumbnail_url = models.CharField(max_length=1000, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    # Its nearest other image when it was last checked (at indexing, or when a newer image
    # came closer), and their similarity as a percentage, like search's `similarity`.
    # Whether that makes a possible duplicate is decided when read, against
    # DUPLICATE_SIMILARITY, so a changed setting applies without reindexing.
    nearest_image = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    nearest_similarity = models.FloatField(null=True, blank=True, db_index=True, editable=False)
    # Null until checked: the next indexing run checks it, even from a cached embedding.
    duplicate_checked_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Catalogs that live elsewhere (catalog/items.py, catalog/sync.py): the outside catalog's
    # name for the item this picture shows; an item may have several pictures. Empty for
    # pictures uploaded here, each its own item.
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    # Where a result leads (the item's page on the site that embeds the search): http(s) only.
    link_url = models.URLField(max_length=2000, blank=True)
    # A JSON object carried, as it is, in the catalog API and every search result: public.
    metadata = models.JSONField(default=dict, blank=True)
    # Where a picture of an item was fetched from, and that server's validators, sent with
    # the next fetch so a picture that did not change is not downloaded again.
    source_url = models.CharField(max_length=2048, blank=True, editable=False)  # MAX_URL_LENGTH
    source_etag = models.CharField(max_length=200, blank=True, editable=False)
    source_last_modified = models.CharField(max_length=100, blank=True, editable=False)
    # Deactivated because its source stopped listing it (a picture replaced, an item pruned),
    # not by a person: such a picture is activated again when the source lists it again; one
    # a curator deactivated (a takedown) stays inactive whatever the source says.
    deactivated_by_source = models.BooleanField(default=False, editable=False)

    is_active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Uploaded bytes are one image: uploading them again returns the first.
            models.UniqueConstraint(
                fields=["sha256"], condition=Q(external_id=""), name="catalog_upload_unique_bytes"
            ),
            # Items of an outside catalog may share a picture (one photo for two variants, a
            # placeholder); an item holds each picture once.
            models.UniqueConstraint(
                fields=["external_id", "sha256"],
                condition=~Q(external_id=""),
                name="catalog_item_unique_bytes",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Image {self.pk}"

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    @property
    def vector_id(self) -> str:
        return str(self.pk)

    @property
    def embedding_vector(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        return np.frombuffer(bytes(self.embedding), dtype=np.float32)


class ReindexJob(models.Model):
    """A background reindexing run over part of the catalog, processed batch by batch.

    `cursor` is the last catalog id whose batch was committed: a job whose worker died
    resumes after it, without redoing finished images.
    """

    class Scope(models.TextChoices):
        ALL = "all", "All images"
        STALE = "stale", "Stale (embedded with other weights, or never)"
        FAILED = "failed", "Failed images"
        SELECTED = "selected", "Selected images"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.QUEUED, db_index=True
    )
    model_id = models.CharField(max_length=100, help_text="The embedding model it indexes with.")
    image_ids = models.JSONField(default=list, blank=True, help_text="For selected images.")
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cursor = models.BigIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Reindex {self.get_scope_display().lower()} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.CANCELLED)


class ReconcileRun(models.Model):
    """What the last comparisons of database and vector store found (shown in the admin)."""

    missing = models.PositiveIntegerField(default=0)
    orphaned = models.PositiveIntegerField(default=0)
    fixed = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Reconcile at {self.created_at:%Y-%m-%d %H:%M}"


class PeriodicTaskRun(models.Model):
    """When a periodic task (celery beat's schedule) last ran: in the database, where every
    web replica reads it, so a stopped beat shows in any replica's health report."""

    name = models.CharField(max_length=200, unique=True, help_text="The Celery task's name.")
    last_run_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.last_run_at:%Y-%m-%d %H:%M:%S}"


class BulkUploadJob(models.Model):
    """An admin bulk upload (pictures, and zip files of up to ZIP_MAX_MEMBERS pictures),
    imported by a worker (catalog.pipeline.bulk_uploads): the request only stages the files.

    `read` counts the pictures (and refusals) done, in a fixed order. Each is committed with
    the image row it created, so a run that stops anywhere resumes after the last one, and
    a job run twice creates nothing twice. The staged files are removed once it is done.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    state = models.CharField(
        max_length=10, choices=State.choices, default=State.QUEUED, db_index=True
    )
    # [{"name": the uploaded file's name, "staged": its name in the staging storage, emptied
    # once removed}], in the order they were uploaded.
    files = models.JSONField(default=list)
    tags = models.JSONField(default=list, blank=True, help_text="Added to every image.")
    total = models.PositiveIntegerField(default=0, help_text="Pictures found in the files.")
    read = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Runs that reached picture `read` and did not get past it
    # (catalog.pipeline.bulk_uploads._begin): a picture that stopped MEMBER_KILLS workers
    # is recorded as failed, and the job goes on.
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    files_removed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Bulk upload #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state == self.State.DONE


class BulkUploadFailure(models.Model):
    """One picture (or file) of a bulk upload that was refused, and why."""

    job = models.ForeignKey(BulkUploadJob, on_delete=models.CASCADE, related_name="failures")
    position = models.PositiveIntegerField()  # its place among the job's pictures
    name = models.TextField()  # "archive.zip:folder/picture.jpg", shown, never a path
    reason = models.TextField()

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="one_failure_per_picture")
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


class CatalogSyncRun(models.Model):
    """One sync of the catalog with a feed (catalog.pipeline.feed_syncs): started by beat for
    the sources of SYNC_SOURCES, or by "Sync now" in admin; shown in admin like the jobs.

    At most one run of a source is queued or running at a time (a database constraint). A
    running run writes `heartbeat_at` as it goes; one whose heartbeat stopped (its worker
    died) is taken over by the task's redelivery, or closed by the next scheduled run, and
    redone: a sync is idempotent, so running it again only finishes the work.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Sync now (admin)"

    source = models.CharField(max_length=2000)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    prune = models.BooleanField(default=False)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.QUEUED, db_index=True
    )
    # Which task run holds it, so a run taken over by another stops writing.
    owner = models.CharField(max_length=32, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    rows = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    deactivated = models.PositiveIntegerField(default=0)
    downloaded_bytes = models.PositiveBigIntegerField(default=0)
    # The first row failures, "line N (external id): code: detail", and what stopped a run.
    errors = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source"],
                condition=Q(state__in=["queued", "running"]),
                name="catalog_sync_one_active_run_per_source",
            )
        ]

    def __str__(self) -> str:
        return f"Sync #{self.pk} of {self.source}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)
