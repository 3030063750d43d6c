"""When each periodic task last ran, and which are late: how a stopped celery beat shows.

celery beat sends the tasks of CELERY_BEAT_SCHEDULE; each records its run here as a worker
starts it (catalog.tasks). The record is in the database, where every web replica reads it,
whichever machine beat and the workers run on. A task whose last run is older than a few of
its intervals is late: beat has stopped, or no worker takes its queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.schedules import maybe_schedule
from celery.schedules import schedule as interval_schedule
from django.utils import timezone

from catalog.models import PeriodicTaskRun


def periodic_task_record_run(*, name: str) -> None:
    """Note that the periodic task `name` runs now."""
    PeriodicTaskRun.objects.update_or_create(name=name, defaults={"last_run_at": timezone.now()})


@dataclass(frozen=True)
class PeriodicTaskState:
    name: str
    every_seconds: float
    last_run_at: datetime | None
    late: bool


def schedule_intervals(schedule: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """{task name: seconds between its runs} for the entries of a beat schedule that run at a
    fixed interval (seconds, a timedelta or celery's `schedule`). A crontab entry has no
    fixed interval to be late by, and is left out."""
    intervals: dict[str, float] = {}
    for entry in schedule.values():
        when = maybe_schedule(entry["schedule"])
        if not isinstance(when, interval_schedule):
            continue
        seconds = when.run_every.total_seconds()
        intervals[entry["task"]] = min(seconds, intervals.get(entry["task"], seconds))
    return intervals


def periodic_tasks_state(
    *,
    schedule: Mapping[str, Mapping[str, Any]],
    late_after_intervals: int,
    watching_since: datetime,
    now: datetime | None = None,
) -> list[PeriodicTaskState]:
    """Each fixed-interval task of `schedule`, and whether it is late.

    A task is late when the later of its last run and `watching_since` is more than
    `late_after_intervals` of its intervals ago. `watching_since` is when the caller (a web
    process) started: a fresh deployment has had no time to run anything yet, and a task
    whose last run is from before a long stop has its first run to come.
    """
    now = now or timezone.now()
    intervals = schedule_intervals(schedule)
    runs = dict(
        PeriodicTaskRun.objects.filter(name__in=intervals).values_list("name", "last_run_at")
    )
    states = []
    for name, every in sorted(intervals.items()):
        last_run_at = runs.get(name)
        since = max(last_run_at, watching_since) if last_run_at else watching_since
        late = now - since > timedelta(seconds=every * late_after_intervals)
        states.append(PeriodicTaskState(name, every, last_run_at, late))
    return states
