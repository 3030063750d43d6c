"""Catalog sync runs: the feeds of SYNC_SOURCES synced by beat, or now from admin, each run
recorded (catalog.models.CatalogSyncRun) and never two of one source at once.

A run is requested (`sync_run_request`), then executed by a worker task
(`sync_run_execute`). The sync itself is catalog.sync's, the same as `manage.py
sync_catalog`: idempotent, so a run interrupted anywhere is safely done again.

Who executes a run: the task that takes it (a conditional update from queued, or from
running with a heartbeat older than STALE_AFTER). A worker killed mid-run leaves it running;
its message comes back (late acknowledgement) and takes it over once its heartbeat is stale,
or the next scheduled request closes it as interrupted and starts a new one.
"""

from __future__ import annotations

import enum
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.enqueue import enqueue_sync_run
from catalog.feeds import FeedUnreadable
from catalog.models import CatalogSyncRun
from catalog.sync import RowResult, SyncReport, catalog_sync

logger = logging.getLogger(__name__)
State = CatalogSyncRun.State

# A running run writes its heartbeat at least this often (with its counts so far)...
HEARTBEAT_EVERY = timedelta(seconds=10)
# ...so one silent for this long has lost its worker. Long enough that a slow picture fetch
# (SYNC_FETCH_DEADLINE_SECONDS, 60 s by default) between two rows is not taken for a death.
STALE_AFTER = timedelta(minutes=3)
ERRORS_KEPT = 50  # row failures kept on the run for admin; the rest are counted


class Executed(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    BUSY = "busy"  # another worker holds it and is alive: try again later
    FINISHED = "finished"  # nothing to do: it ended, or is gone


class UnknownSource(Exception):
    code = "unknown_sync_source"

    def __init__(self, source: str):
        self.detail = f"{source!r} is not one of SYNC_SOURCES; add it there to sync it."
        super().__init__(self.detail)


def sync_run_request(
    *, source: str, trigger: str, prune: bool | None = None, created_by: str = ""
) -> tuple[CatalogSyncRun, bool]:
    """A run of `source`, queued after commit: (run, True); or the run of that source
    already queued or running: (that run, False). A run whose worker died (its heartbeat
    is older than STALE_AFTER) is closed as interrupted first, and a new one queued."""
    if source not in settings.SYNC_SOURCES:
        raise UnknownSource(source)
    prune = settings.SYNC_PRUNE if prune is None else prune
    for _attempt in range(2):
        run = _active_runs(source).first()
        if run is not None and not _lost(run):
            return run, False
        if run is not None:
            _close_interrupted(run)
        try:
            with transaction.atomic():
                run = CatalogSyncRun.objects.create(
                    source=source, trigger=trigger, prune=prune, created_by=created_by
                )
                enqueue_sync_run(run.pk)
            return run, True
        except IntegrityError:
            continue  # requested at the same moment elsewhere: that one stands
    return _active_runs(source).get(), False


def sync_run_under_way(source: str) -> CatalogSyncRun | None:
    """The run of `source` queued or running now, if any."""
    return _active_runs(source).first()


def _active_runs(source: str):
    return CatalogSyncRun.objects.filter(source=source, state__in=[State.QUEUED, State.RUNNING])


def sync_runs_request_scheduled() -> list[CatalogSyncRun]:
    """Beat's request: a run of every source of SYNC_SOURCES that has none under way."""
    return [
        run
        for source in settings.SYNC_SOURCES
        for run, created in [sync_run_request(source=source, trigger="schedule")]
        if created
    ]


def _lost(run: CatalogSyncRun) -> bool:
    """Queued runs wait for a worker however long; a running one must keep beating."""
    beat = run.heartbeat_at or run.started_at
    return run.state == State.RUNNING and beat is not None and beat < timezone.now() - STALE_AFTER


def _close_interrupted(run: CatalogSyncRun) -> None:
    CatalogSyncRun.objects.filter(pk=run.pk, state=State.RUNNING, owner=run.owner).update(
        state=State.FAILED,
        error="Interrupted: its worker stopped (the next run does the work again).",
        finished_at=timezone.now(),
    )


def sync_run_execute(*, run_id: int) -> Executed:
    """Run sync `run_id` if this caller may take it; record its counts as it goes."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    takeable = Q(state=State.QUEUED) | Q(state=State.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    took = CatalogSyncRun.objects.filter(takeable, pk=run_id).update(
        state=State.RUNNING,
        owner=owner,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
    )
    if not took:
        run = CatalogSyncRun.objects.filter(pk=run_id).first()
        return Executed.BUSY if run and run.state == State.RUNNING else Executed.FINISHED
    run = CatalogSyncRun.objects.get(pk=run_id)
    progress = _Progress(run, owner)
    try:
        report = catalog_sync(source=run.source, prune=run.prune, on_row=progress.row)
    except FeedUnreadable as exc:
        progress.finish(State.FAILED, error=f"{exc.code}: {exc.detail}")
        return Executed.FAILED
    except Exception as exc:
        logger.exception("Catalog sync run %s of %s failed.", run_id, run.source)
        progress.finish(State.FAILED, error=f"{type(exc).__name__}: {exc}")
        return Executed.FAILED
    progress.finish(State.DONE, report=report)
    return Executed.DONE


class _Progress:
    """The run's counts, written with a heartbeat every HEARTBEAT_EVERY, and at the end;
    only while this caller still owns the run."""

    def __init__(self, run: CatalogSyncRun, owner: str):
        self.run, self.owner = run, owner
        self.counts = dict.fromkeys(["rows", "created", "updated", "unchanged", "failed"], 0)
        self.errors: list[str] = []
        self.written_at = timezone.now()

    def row(self, result: RowResult) -> None:
        self.counts["rows"] += 1
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome == "failed" and len(self.errors) < ERRORS_KEPT:
            self.errors.append(_error_line(result))
        if timezone.now() - self.written_at >= HEARTBEAT_EVERY:
            self._write(errors=self.errors, **self.counts)

    def finish(self, state: str, *, report: SyncReport | None = None, error: str = "") -> None:
        values = {**self.counts, "errors": self.errors, "error": error}
        if report is not None:
            values |= {
                "rows": report.rows,
                "created": report.created,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "failed": report.failed,
                "deactivated": sum(report.deactivated.values()),
                "downloaded_bytes": report.downloaded_bytes,
                "errors": [_error_line(result) for result in report.failures[:ERRORS_KEPT]],
                "error": report.prune_refused and f"Not pruned: {report.prune_refused}",
            }
        self._write(state=state, finished_at=timezone.now(), **values)

    def _write(self, **values) -> None:
        now = timezone.now()
        CatalogSyncRun.objects.filter(pk=self.run.pk, owner=self.owner).update(
            heartbeat_at=now, **values
        )
        self.written_at = now


def _error_line(result: RowResult) -> str:
    who = f" ({result.external_id})" if result.external_id else ""
    return f"line {result.line}{who}: {result.code}: {result.detail}"
