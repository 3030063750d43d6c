"""Issue 6's promise, end to end: a curator in a real browser, a real worker on Redis.

Upload a zip in the admin, watch the worker add its pictures and index them, change the
weights, run a stale reindex from the admin and watch it to the end, with nothing lost.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest

from catalog.models import CatalogImage
from search.vectorstores import get_vector_store
from tests.conftest import photo_bytes
from tests.integration.conftest import stop_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
NAMES = ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png", "brick.png"]


def wait_until(page, condition, *, timeout: float = 120) -> None:
    """Poll while the page reloads itself (it is not reloaded by the test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, page.content()[-3000:]
        page.wait_for_timeout(500)


def summary_text(page) -> str:
    try:
        return page.inner_text("#bulk-summary", timeout=2000)
    except Exception:  # between two reloads
        return ""


def health_text(page) -> str:
    try:
        return page.inner_text("#index-health", timeout=2000)
    except Exception:  # between two reloads
        return ""


def test_upload_a_zip_watch_it_index_change_weights_and_reindex_stale(
    browser, live_server, admin_user, start_worker, settings, tmp_path
):
    first_worker = start_worker()
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in NAMES:
            zipped.writestr(f"photos/{Path(name).stem}.jpg", photo_bytes(name))

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")

    page.goto(f"{live_server.url}/admin/catalog/catalogimage/bulk-upload/")
    page.set_input_files("#id_files", archive)
    page.fill("#id_tags", "holiday")
    page.click("#bulk-upload-form input[type=submit]")
    # The upload's own page, at once; it reloads itself while the worker adds the pictures.
    assert "/admin/catalog/bulkuploadjob/" in page.url
    wait_until(page, lambda: "Done:" in summary_text(page))
    assert "5 added, 0 already in the catalog, 0 refused." in summary_text(page)

    page.click("text=Watch them being indexed")
    wait_until(page, lambda: "5 indexed" in health_text(page))
    wait_until(page, lambda: 'http-equiv="refresh"' not in page.content())  # it stops
    page.screenshot(path=_screenshot("curator-indexed.png"), full_page=True)

    # New weights: a worker restarted with them, and this (web) process set to them.
    stop_worker(first_worker)
    settings.EMBEDDING_SEED = 1
    start_worker(EMBEDDING_SEED="1")

    page.goto(f"{live_server.url}/admin/catalog/catalogimage/")
    page.click("text=Reindex stale")
    assert "/admin/catalog/reindexjob/" in page.url
    wait_until(page, lambda: "State:\nDone" in page.inner_text("#content-main", timeout=2000))
    page.screenshot(path=_screenshot("curator-stale-reindex.png"), full_page=True)
    assert "100.0% (5 of 5)" in page.inner_text("#content-main")

    rows = CatalogImage.objects.all()
    assert rows.count() == 5
    assert {row.status for row in rows} == {"indexed"}
    assert {row.embedding_model for row in rows} == {"resnet50/random-seed1"}
    assert {tuple(row.tags) for row in rows} == {("holiday",)}
    assert get_vector_store().count() == 5
    context.close()


def _screenshot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name
