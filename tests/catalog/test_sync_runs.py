"""Catalog sync runs (catalog.pipeline.feed_syncs): the feeds of SYNC_SOURCES synced by beat
or "Sync now", each run recorded, never two of one source at once, and a run whose worker
died done again."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog import tasks
from catalog.models import CatalogImage, CatalogSyncRun
from catalog.pipeline import feed_syncs
from catalog.pipeline.feed_syncs import Executed
from tests.conftest import encode, photo

pytestmark = pytest.mark.django_db
State = CatalogSyncRun.State
RUNS = "/admin/catalog/catalogsyncrun/"


@pytest.fixture
def feed(tmp_path, settings):
    """A CSV feed of two items with pictures beside it, named in SYNC_SOURCES."""
    for name in ("coffee.png", "chelsea.png"):
        (tmp_path / f"{name}.jpg").write_bytes(encode(photo(name)))
    path = tmp_path / "feed.csv"
    path.write_text(
        "external_id,image,title\n"
        "mug,coffee.png.jpg,Mug\n"
        "cat,chelsea.png.jpg,Cat\n"
        "bad,missing.jpg,Missing picture\n"
    )
    settings.SYNC_SOURCES = [str(path)]
    return str(path)


def requested(feed, **kwargs) -> CatalogSyncRun:
    run, created = feed_syncs.sync_run_request(source=feed, trigger="schedule", **kwargs)
    assert created
    return run


def test_beat_requests_one_run_per_source_and_none_while_one_is_under_way(feed):
    [run] = feed_syncs.sync_runs_request_scheduled()
    assert (run.source, run.state, run.trigger) == (feed, State.QUEUED, "schedule")
    assert feed_syncs.sync_runs_request_scheduled() == []
    assert CatalogSyncRun.objects.count() == 1


def test_a_run_syncs_the_feed_and_records_what_it_did(feed):
    run = requested(feed)
    assert feed_syncs.sync_run_execute(run_id=run.pk) == Executed.DONE
    run.refresh_from_db()
    assert (run.state, run.rows, run.created, run.failed) == (State.DONE, 3, 2, 1)
    assert run.errors[0].startswith("line 4 (bad): ")
    assert set(CatalogImage.objects.values_list("external_id", flat=True)) == {"mug", "cat"}
    # Done: running it again (a redelivered message) does nothing.
    assert feed_syncs.sync_run_execute(run_id=run.pk) == Executed.FINISHED


def test_a_second_run_of_the_same_feed_finds_everything_unchanged(feed):
    feed_syncs.sync_run_execute(run_id=requested(feed).pk)
    second = requested(feed)
    feed_syncs.sync_run_execute(run_id=second.pk)
    second.refresh_from_db()
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)


def test_a_run_held_by_a_live_worker_is_left_to_it(feed):
    run = requested(feed)
    CatalogSyncRun.objects.filter(pk=run.pk).update(
        state=State.RUNNING, owner="other", heartbeat_at=timezone.now()
    )
    assert feed_syncs.sync_run_execute(run_id=run.pk) == Executed.BUSY
    assert not CatalogImage.objects.exists()


def test_a_run_whose_worker_died_is_taken_over_and_done_again(feed):
    run = requested(feed)
    silent = timezone.now() - feed_syncs.STALE_AFTER - timedelta(seconds=1)
    CatalogSyncRun.objects.filter(pk=run.pk).update(
        state=State.RUNNING, owner="dead", heartbeat_at=silent, attempts=1
    )
    assert feed_syncs.sync_run_execute(run_id=run.pk) == Executed.DONE
    run.refresh_from_db()
    assert (run.state, run.attempts, run.created) == (State.DONE, 2, 2)


def test_the_next_schedule_closes_a_lost_run_and_starts_another(feed):
    lost = requested(feed)
    silent = timezone.now() - feed_syncs.STALE_AFTER - timedelta(seconds=1)
    CatalogSyncRun.objects.filter(pk=lost.pk).update(
        state=State.RUNNING, owner="dead", heartbeat_at=silent
    )
    [fresh] = feed_syncs.sync_runs_request_scheduled()
    lost.refresh_from_db()
    assert (lost.state, fresh.state) == (State.FAILED, State.QUEUED)
    assert "Interrupted" in lost.error


def test_a_feed_that_cannot_be_read_fails_the_run_with_the_reason(feed, tmp_path):
    (tmp_path / "feed.csv").unlink()
    run = requested(feed)
    assert feed_syncs.sync_run_execute(run_id=run.pk) == Executed.FAILED
    run.refresh_from_db()
    assert run.state == State.FAILED and run.error


def test_only_configured_sources_can_be_synced(feed):
    with pytest.raises(feed_syncs.UnknownSource):
        feed_syncs.sync_run_request(source="https://elsewhere.example/feed.csv", trigger="manual")


def test_the_periodic_task_queues_and_a_worker_runs_it(
    feed, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_catalog_sources.delay()
    run = CatalogSyncRun.objects.get()
    assert (run.state, run.created) == (State.DONE, 2)


def test_sync_now_in_admin_starts_a_run_and_shows_it(feed, admin_client):
    page = admin_client.get(f"{RUNS}sync-now/").content.decode()
    assert feed in page
    response = admin_client.post(f"{RUNS}sync-now/", {"source": feed})
    run = CatalogSyncRun.objects.get()
    assert response["Location"] == f"{RUNS}{run.pk}/change/"
    assert run.trigger == "manual"
    again = admin_client.post(f"{RUNS}sync-now/", {"source": feed})
    assert again["Location"] == f"{RUNS}{run.pk}/change/"  # the run under way, not a second
    feed_syncs.sync_run_execute(run_id=run.pk)
    shown = admin_client.get(f"{RUNS}{run.pk}/change/").content.decode()
    assert "2 created" in shown and "line 4 (bad)" in shown
    assert admin_client.get(RUNS).status_code == 200


def test_sync_now_refuses_a_source_that_is_not_configured(feed, admin_client):
    response = admin_client.post(f"{RUNS}sync-now/", {"source": "/etc/passwd"}, follow=True)
    assert "is not one of SYNC_SOURCES" in response.content.decode()
    assert not CatalogSyncRun.objects.exists()
