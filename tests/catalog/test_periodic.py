"""Periodic tasks record their runs, and one not run for a few intervals is late."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from celery.schedules import crontab
from django.utils import timezone

from catalog import tasks
from catalog.models import PeriodicTaskRun
from catalog.pipeline.periodic import periodic_tasks_state, schedule_intervals

pytestmark = pytest.mark.django_db

SWEEP = "catalog.tasks.send_unqueued"
SCHEDULE = {"send-unqueued": {"task": SWEEP, "schedule": 60.0}}


def state(*, last_run_ago: float | None, up_for: float, schedule=SCHEDULE):
    now = timezone.now()
    if last_run_ago is not None:
        PeriodicTaskRun.objects.update_or_create(
            name=SWEEP, defaults={"last_run_at": now - timedelta(seconds=last_run_ago)}
        )
    (only,) = periodic_tasks_state(
        schedule=schedule,
        late_after_intervals=3,
        watching_since=now - timedelta(seconds=up_for),
        now=now,
    )
    return only


@pytest.mark.parametrize(
    "task",
    [tasks.send_unqueued, tasks.requeue_stuck, tasks.reconcile_index, tasks.compact_vector_store],
    ids=lambda t: t.name,
)
def test_each_periodic_task_records_when_it_ran(task):
    before = timezone.now()
    task()
    run = PeriodicTaskRun.objects.get(name=task.name)
    assert run.last_run_at >= before


def test_running_again_moves_the_record_on():
    tasks.send_unqueued()
    first = PeriodicTaskRun.objects.get(name=SWEEP).last_run_at
    tasks.send_unqueued()
    assert PeriodicTaskRun.objects.get(name=SWEEP).last_run_at > first
    assert PeriodicTaskRun.objects.filter(name=SWEEP).count() == 1


def test_the_schedules_task_names_are_the_tasks_that_record(settings):
    # The health report looks runs up by the schedule's task names: they must be the names
    # the tasks record under.
    recorded = {
        tasks.send_unqueued.name,
        tasks.requeue_stuck.name,
        tasks.reconcile_index.name,
        tasks.compact_vector_store.name,  # with the local store, not in exact mode
    }
    assert set(schedule_intervals(settings.CELERY_BEAT_SCHEDULE)) == recorded


def test_a_task_run_within_three_intervals_is_on_time():
    assert state(last_run_ago=150, up_for=3600).late is False


def test_a_task_not_run_for_more_than_three_intervals_is_late():
    late = state(last_run_ago=200, up_for=3600)
    assert late.late is True
    assert late.every_seconds == 60


def test_a_task_that_never_ran_is_late_only_once_the_process_has_been_up_that_long():
    assert state(last_run_ago=None, up_for=120).late is False
    assert state(last_run_ago=None, up_for=200).late is True


def test_a_run_from_before_a_restart_gets_the_same_grace():
    # Down for a day, then started again: its first run is still to come.
    assert state(last_run_ago=86400, up_for=30).late is False


def test_intervals_come_from_seconds_timedeltas_and_schedules_but_not_crontabs():
    schedule = {
        "a": {"task": "a", "schedule": 30},
        "b": {"task": "b", "schedule": timedelta(minutes=5)},
        "c": {"task": "c", "schedule": crontab(minute=0)},
        "a-again": {"task": "a", "schedule": 10.0},
    }
    assert schedule_intervals(schedule) == {"a": 10.0, "b": 300.0}


# --- Run from cron instead of beat ----------------------------------------------------


def test_the_cron_commands_record_the_runs_of_the_tasks_they_stand_for():
    from django.core.management import call_command

    before = timezone.now()
    call_command("requeue_stuck", stdout=io.StringIO())
    call_command("reconcile", "--fix", stdout=io.StringIO())
    ran = dict(PeriodicTaskRun.objects.values_list("name", "last_run_at"))
    assert set(ran) == {tasks.requeue_stuck.name, SWEEP, tasks.reconcile_index.name}
    assert all(when >= before for when in ran.values())


def test_reconcile_without_fix_repairs_nothing_and_records_no_run():
    from django.core.management import call_command

    call_command("reconcile", stdout=io.StringIO())
    assert not PeriodicTaskRun.objects.exists()


def test_periodic_status_check_fails_while_a_task_is_late_and_passes_once_all_ran(settings):
    from django.core.management import CommandError, call_command

    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    PeriodicTaskRun.objects.create(name=SWEEP, last_run_at=timezone.now() - timedelta(hours=1))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"late: catalog\.tasks\.send_unqueued"):
        call_command("periodic_status", "--check", stdout=out)
    assert out.getvalue().startswith("LATE  catalog.tasks.send_unqueued")

    tasks.send_unqueued()
    out = io.StringIO()
    call_command("periodic_status", "--check", stdout=out)
    assert out.getvalue().startswith("ok    catalog.tasks.send_unqueued")


def test_periodic_status_gives_a_task_that_never_ran_the_grace_of_a_fresh_start(settings):
    from django.core.management import call_command

    settings.CELERY_BEAT_SCHEDULE = SCHEDULE
    call_command("periodic_status", "--check", "--since", str(time.time()), stdout=io.StringIO())
