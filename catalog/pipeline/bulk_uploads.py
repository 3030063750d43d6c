"""Admin bulk uploads as background jobs: the request stages the files, a worker imports them.

A zip file may hold ZIP_MAX_MEMBERS (10,000) pictures, and reading and checking each takes
tens of milliseconds: minutes that no request may hold. The request only stores the uploaded
files where single uploads wait for the worker (the `staging` storage: STAGING_ROOT, or
object storage that every machine reaches) and queues a job; a worker imports them picture
by picture, and the job's admin page shows how far it got and what was refused.

Nothing uploaded is lost and nothing is created twice. Each picture's row and the job's
progress are committed in one transaction, guarded by the job's position: a run that stops
anywhere (an error, a killed worker) resumes after the last committed picture, and a second
run of the same job (a redelivered task) finds each picture already counted and stops. The
staged files are removed only once the job is done.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog import services
from catalog.enqueue import enqueue_bulk_upload_job, enqueue_indexing
from catalog.models import BulkUploadFailure, BulkUploadJob
from catalog.sources import ImageSource, display_name, uploaded_sources
from search.imaging import ImageRejected

logger = logging.getLogger(__name__)
State = BulkUploadJob.State

# Runs killed while reading one picture before it is recorded as failed: redelivering it
# again would only kill the next worker (as catalog.pipeline.indexing does for indexing).
MEMBER_KILLS = 2


def bulk_upload_start(
    *, files: Sequence[File], tags: Iterable[str] = (), created_by: str = ""
) -> BulkUploadJob:
    """Stage the uploaded `files` and queue their import; no picture is read here.

    `tags` must be normalised already (the form does it). Raises
    services.StagingUnavailable when the files cannot be stored: nothing is kept then.
    """
    folder = f"bulk/{secrets.token_hex(8)}"
    staged: list[dict[str, str]] = []
    try:
        for position, upload in enumerate(files):
            name = display_name(upload.name or "upload")
            # A name of our own in the storage: the uploaded one is only ever shown.
            suffix = "zip" if name.lower().endswith(".zip") else "upload"
            saved = storages["staging"].save(f"{folder}/{position}.{suffix}", upload)
            staged.append({"name": name, "staged": saved})
    except Exception as exc:  # OSError, or an object store client's own errors
        _remove(staged)
        raise services.StagingUnavailable(exc) from exc
    try:
        job = BulkUploadJob.objects.create(files=staged, tags=list(tags), created_by=created_by)
    except BaseException:
        _remove(staged)
        raise
    enqueue_bulk_upload_job(job.pk)
    return job


def bulk_upload_run(*, job_id: int) -> None:
    """Import the job's pictures from where the last run stopped, then remove its files.

    Raises services.StagingUnavailable, or OSError, when the staging storage fails: the
    job stays at the picture it was on, for the task's retry (or the stalled-job sweep).
    """
    job = BulkUploadJob.objects.filter(pk=job_id).first()
    if job is None:
        return
    if job.is_finished:
        _remove_files(job)  # a run stopped between finishing the job and removing them
        return
    job = _begin(job)
    indexing: list[int] = []
    try:
        with contextlib.ExitStack() as opened:
            sources = _sources(job, opened)
            if job.total != len(sources):
                BulkUploadJob.objects.filter(pk=job.pk).update(total=len(sources))
            killer = job.attempts > MEMBER_KILLS and job.read < len(sources)
            if killer and _record(job, job.read, sources[job.read], failure=_killed()) is None:
                return  # another run of this job is ahead of this one
            for position in range(_position(job), len(sources)):
                outcome = _import(job, position, sources[position])
                if outcome is None:
                    return  # another run of this job is ahead of this one
                if outcome:
                    indexing.append(outcome)
                    _queue(indexing, at_least=settings.INDEX_BATCH_SIZE)
    except BaseException:
        # An error is not a kill: this run no longer counts as one at the picture it was on.
        BulkUploadJob.objects.filter(pk=job.pk, attempts__gt=0).update(attempts=F("attempts") - 1)
        raise
    finally:
        _queue(indexing, at_least=1)
    _finish(job)
    _remove_files(job)


def bulk_uploads_resume_stalled(*, older_than: timedelta) -> list[int]:
    """Queue again jobs with no progress for `older_than` (their task was lost, or its
    worker died), and remove the staged files of done jobs that still hold some."""
    now = timezone.now()
    stalled = BulkUploadJob.objects.filter(
        state__in=[State.QUEUED, State.RUNNING], updated_at__lt=now - older_than
    )
    ids = list(stalled.values_list("pk", flat=True))
    stalled.update(updated_at=now)  # not resumed again before the next threshold
    for job_id in ids:
        enqueue_bulk_upload_job(job_id)
    for job in BulkUploadJob.objects.filter(state=State.DONE, files_removed_at__isnull=True):
        _remove_files(job)
    return ids


# --- One run --------------------------------------------------------------------------------


def _begin(job: BulkUploadJob) -> BulkUploadJob:
    """Count this run as one at the job's position and mark the job running.

    `attempts` counts the runs that reached the picture at `read` and did not get past it:
    a run counts where it is (each picture it commits moves its count on to the next one),
    and uncounts itself when it stops with an error, so a count left raised means that
    workers died there.
    """
    now = timezone.now()
    BulkUploadJob.objects.filter(pk=job.pk, state=State.QUEUED).update(
        state=State.RUNNING, started_at=now
    )
    BulkUploadJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1, updated_at=now)
    job.refresh_from_db()
    return job


def _sources(job: BulkUploadJob, opened: contextlib.ExitStack) -> list[ImageSource]:
    """The job's pictures, in the same order on every run; a staged file that is gone is
    one refusal, as a zip file that cannot be opened is."""
    sources: list[ImageSource] = []
    for item in job.files:
        try:
            handle = opened.enter_context(storages["staging"].open(item["staged"], "rb"))
        except FileNotFoundError:
            sources.append(_gone(item["name"]))
        else:
            sources += uploaded_sources([File(handle, name=item["name"])])
    return sources


def _gone(name: str) -> ImageSource:
    def read() -> bytes:
        raise ImageRejected(
            "staged_upload_missing",
            "was no longer in the staging storage (STAGING_STORAGE) when the worker came to "
            "read it, so nothing in it was imported; upload it again.",
        )

    return ImageSource(name=name, read=read)


def _position(job: BulkUploadJob) -> int:
    return BulkUploadJob.objects.values_list("read", flat=True).get(pk=job.pk)


def _import(job: BulkUploadJob, position: int, source: ImageSource) -> int | bool | None:
    """Import the picture at `position`: its image's id (created or already there), False
    when refused, None when another run has already done it."""
    # Read and decoded before the transaction: decoding takes tens of milliseconds a
    # picture, and SQLite holds its one write lock for a whole transaction.
    try:
        data = source.read()
        picture = services.picture_check(ContentFile(data, name=source.filename or "upload"))
    except ImageRejected as exc:
        return _record(job, position, source, failure=exc.detail)
    except (OSError, services.StagingUnavailable):
        raise  # the staged file could not be read: the job waits for the storage
    except Exception as exc:  # a bug must not stop the job for every other picture
        logger.exception("Bulk upload %s: %s could not be imported.", job.pk, source.name)
        return _record(job, position, source, failure=f"could not be imported ({exc!r}).")
    return _record(job, position, source, picture=picture)


def _record(
    job: BulkUploadJob,
    position: int,
    source: ImageSource,
    *,
    picture: services.CheckedPicture | None = None,
    failure: str = "",
) -> int | bool | None:
    """Create the picture's image (or record its refusal) and move the job past it, in one
    transaction that only the run still at `position` may commit."""
    with transaction.atomic():
        current = BulkUploadJob.objects.filter(pk=job.pk, read=position)
        if current.select_for_update().first() is None:
            return None
        # This run, now at the next picture, is the one attempt there (see _begin).
        progress = {"read": F("read") + 1, "attempts": 1, "updated_at": timezone.now()}
        image_id: int | bool = False
        if picture is not None:
            image, created = services.image_create_checked(
                picture=picture, title=source.title, tags=[*job.tags, *source.tags], enqueue=False
            )
            image_id = image.pk
            progress["created" if created else "duplicates"] = (
                F("created" if created else "duplicates") + 1
            )
        else:
            BulkUploadFailure.objects.create(
                job=job, position=position, name=source.name, reason=failure
            )
            progress["failed"] = F("failed") + 1
        current.update(**progress)
    return image_id


def _killed() -> str:
    return (
        f"stopped its worker {MEMBER_KILLS} times while being read (killed, perhaps for "
        "memory), so it was skipped; upload it again on its own, or a smaller copy."
    )


def _queue(image_ids: list[int], *, at_least: int) -> None:
    """Queue indexing for the images waiting in `image_ids` once there are `at_least`.
    Duplicates are queued too: indexing is idempotent, and one may have failed before. An
    id never sent (the worker died first) is sent by the outbox sweep
    (catalog.pipeline.recovery)."""
    if image_ids and len(image_ids) >= at_least:
        enqueue_indexing(list(dict.fromkeys(image_ids)))
        image_ids.clear()


def _finish(job: BulkUploadJob) -> None:
    now = timezone.now()
    BulkUploadJob.objects.filter(pk=job.pk).exclude(state=State.DONE).update(
        state=State.DONE, finished_at=now, updated_at=now
    )


# --- The staged files -----------------------------------------------------------------------


def _remove_files(job: BulkUploadJob) -> None:
    """Remove a done job's staged files; what cannot be removed now (object storage
    unreachable) stays listed, for the stalled-job sweep to remove later."""
    job.refresh_from_db(fields=["files", "files_removed_at"])
    if job.files_removed_at is not None:
        return
    left = _remove([item for item in job.files if item["staged"]])
    files = [{**item, "staged": item["staged"] if item in left else ""} for item in job.files]
    BulkUploadJob.objects.filter(pk=job.pk).update(
        files=files, files_removed_at=None if left else timezone.now()
    )
    job.files, job.files_removed_at = files, (None if left else timezone.now())


def _remove(staged: list[dict[str, str]]) -> list[dict[str, str]]:
    """Delete staged files; returns those that could not be deleted."""
    left = []
    for item in staged:
        try:
            storages["staging"].delete(item["staged"])
        except Exception:  # each storage has its own errors (OSError, botocore, ...)
            logger.warning("Could not remove staged upload %s now.", item["staged"], exc_info=True)
            left.append(item)
    return left
