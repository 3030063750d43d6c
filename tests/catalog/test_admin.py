"""Curation in Django admin: pages, actions, bulk upload and reindexing jobs."""

import io
import zipfile

import pytest
from django.core.files.base import ContentFile

from catalog import services, tasks
from catalog.models import BulkUploadJob, CatalogImage, ReconcileRun, ReindexJob
from catalog.pipeline import bulk_uploads, jobs
from catalog.pipeline.indexing import images_index
from search.vectorstores import get_vector_store
from tests.conftest import b64, encode, photo, photo_bytes, photo_file

pytestmark = pytest.mark.django_db
LIST = "/admin/catalog/catalogimage/"
ADD = f"{LIST}add/"
NAMES = ["coffee.png", "rocket.jpg", "chelsea.png"]


@pytest.fixture
def admin(admin_client):
    return admin_client


@pytest.fixture
def indexed():
    images = [services.image_create(file=photo_file(name))[0] for name in NAMES]
    images_index(image_ids=[image.pk for image in images])
    return list(CatalogImage.objects.order_by("pk"))


def add(admin, name="coffee.png", **fields):
    return admin.post(ADD, {"image": photo_file(name), "title": "", "tags": "", "is_active": "on",
                            **fields})  # fmt: skip


def act(admin, action, images):
    return admin.post(LIST, {"action": action, "_selected_action": [i.pk for i in images]})


# --- Pages, and who may see them ---------------------------------------------------------


def test_every_page_opens_for_staff(admin, indexed):
    job = jobs.reindex_job_start(scope="all")
    upload = bulk_uploads.bulk_upload_start(files=[photo_file("brick.png")])
    for url in (
        LIST,
        ADD,
        f"{LIST}{indexed[0].pk}/change/",
        f"{LIST}bulk-upload/",
        "/admin/catalog/reindexjob/",
        f"/admin/catalog/reindexjob/{job.pk}/change/",
        "/admin/catalog/bulkuploadjob/",
        f"/admin/catalog/bulkuploadjob/{upload.pk}/change/",
    ):
        assert admin.get(url).status_code == 200, url  # fmt: skip


@pytest.mark.parametrize("who", ["anonymous", "not staff"])
def test_anonymous_and_non_staff_users_are_sent_to_the_login(
    client, django_user_model, who, indexed
):
    if who == "not staff":
        client.force_login(django_user_model.objects.create_user("visitor", password="x"))
    for url in (LIST, f"{LIST}bulk-upload/", "/admin/catalog/reindexjob/",
                "/admin/catalog/bulkuploadjob/"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    response = client.post(f"{LIST}reindex/all/")
    assert response.status_code == 302
    assert not ReindexJob.objects.exists()


def test_the_list_shows_thumbnails_badges_and_the_index_health_panel(admin, indexed):
    ReconcileRun.objects.create(missing=0, orphaned=2, fixed=True)
    page = admin.get(LIST).content.decode()
    assert page.count('class="status-badge"') == 3
    assert indexed[0].thumbnail_url in page
    assert "<strong>3</strong> indexed" in page
    assert "Database: 3 active image(s) indexed" in page and "3 vector(s)" in page
    assert "2 orphaned, fixed" in page
    assert "No reindexing job running." in page


def test_watching_the_list_reloads_it_while_images_are_in_flight(admin, indexed):
    assert 'http-equiv="refresh"' not in admin.get(f"{LIST}?watch=1").content.decode()
    services.image_create(file=photo_file("moon.png"))  # pending
    page = admin.get(f"{LIST}?watch=1").content.decode()
    assert 'http-equiv="refresh"' in page
    assert 'http-equiv="refresh"' not in admin.get(LIST).content.decode()


def test_the_list_filters_by_tag_status_and_model(admin, indexed):
    services.image_update(image=indexed[0], tags="beach, summer")
    services.image_update(image=indexed[1], tags="beachwear")
    page = admin.get(f"{LIST}?tag=beach").content.decode()
    assert page.count('class="status-badge"') == 1
    assert admin.get(f"{LIST}?status__exact=failed").content.decode().count("status-badge") == 0
    model = indexed[0].embedding_model
    page = admin.get(f"{LIST}?embedding_model={model}").content.decode()
    assert page.count('class="status-badge"') == 3


def test_the_change_page_shows_the_preview_and_nearest_neighbours(admin, indexed):
    page = admin.get(f"{LIST}{indexed[0].pk}/change/").content.decode()
    assert indexed[0].thumbnail_url in page
    for other in indexed[1:]:
        assert f"{LIST}{other.pk}/change/" in page
    assert "may be a duplicate" in page


# --- Adding, editing, deleting ------------------------------------------------------------


def test_a_curator_uploads_an_image_and_its_indexing_is_queued(
    admin, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        response = add(admin, title="Coffee", tags="Drink, food")
    assert response.status_code == 302
    image = CatalogImage.objects.get()
    assert (image.title, image.tags, image.status) == ("Coffee", ["drink", "food"], "pending")
    assert len(queued) == 1


def test_uploading_a_non_image_shows_the_reason_on_the_form(admin):
    response = admin.post(ADD, {"image": ContentFile(b"nope", name="x.jpg"), "tags": ""})
    assert response.status_code == 200
    assert b"not an image" in response.content
    assert not CatalogImage.objects.exists()


def test_uploading_the_same_bytes_twice_keeps_one_row(admin):
    add(admin)
    add(admin, title="again")
    assert CatalogImage.objects.count() == 1


def change(admin, image, **fields):
    values = {"title": image.title, "tags": "", "external_id": image.external_id,
              "link_url": image.link_url, "metadata": "{}", "is_active": "on"}  # fmt: skip
    values.update(fields)
    return admin.post(f"{LIST}{image.pk}/change/", values)


def test_a_curator_gives_an_image_an_item_link_and_metadata(admin, indexed):
    response = change(
        admin, indexed[0], external_id="sku-9", link_url="https://shop.example/9",
        metadata='{"price": 12}',
    )  # fmt: skip
    assert response.status_code == 302
    image = CatalogImage.objects.get(pk=indexed[0].pk)
    assert (image.external_id, image.link_url, image.metadata) == (
        "sku-9",
        "https://shop.example/9",
        {"price": 12},
    )
    found = admin.get(LIST, {"q": "sku-9"}).content.decode()
    assert f"{LIST}{image.pk}/change/" in found
    assert f"{LIST}{indexed[1].pk}/change/" not in found


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"link_url": "javascript:alert(1)"}, "http:// or https://"),
        ({"metadata": '{"a": {"b": 1}}'}, "no nested objects"),
        ({"metadata": "[1, 2]"}, "JSON object"),
        ({"external_id": "x" * 256}, "longer than 255"),
    ],
)
def test_admin_refuses_item_fields_as_the_api_does(admin, indexed, fields, refusal):
    response = change(admin, indexed[0], **fields)
    assert response.status_code == 200
    assert refusal in response.content.decode()
    assert CatalogImage.objects.get(pk=indexed[0].pk).link_url == ""


def test_deleting_in_bulk_removes_rows_vectors_and_hosted_files(
    admin, indexed, eager_celery, django_capture_on_commit_callbacks, settings
):
    files = [settings.MEDIA_ROOT / image.hosted_key for image in indexed]
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(LIST, {"action": "delete_selected", "post": "yes",
                          "_selected_action": [i.pk for i in indexed]})  # fmt: skip
    assert not CatalogImage.objects.exists()
    assert get_vector_store().count() == 0
    assert not any(path.exists() for path in files)


# --- Actions --------------------------------------------------------------------------------


def test_deactivating_drops_images_from_results_at_once(admin, client, indexed):
    coffee = indexed[0]
    act(admin, "deactivate", [coffee])  # its vector is removed later, by the worker
    body = {"image": b64(photo_bytes("coffee.png"))}
    ids = [r["id"] for r in client.post("/api/search/", body, "application/json").json()["results"]]
    assert coffee.pk not in ids
    act(admin, "activate", [coffee])
    ids = [r["id"] for r in client.post("/api/search/", body, "application/json").json()["results"]]
    assert ids[0] == coffee.pk


def test_the_retry_action_requeues_only_failed_images(
    admin, indexed, django_capture_on_commit_callbacks
):
    CatalogImage.objects.filter(pk=indexed[0].pk).update(status="failed", failure_reason="boom")
    with django_capture_on_commit_callbacks() as queued:
        act(admin, "retry_failed", indexed)
    assert queued
    assert CatalogImage.objects.get(pk=indexed[0].pk).status == "pending"
    assert CatalogImage.objects.filter(status="indexed").count() == 2


def test_reindex_selected_starts_a_job_over_those_images(
    admin, indexed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        act(admin, "reindex_selected", indexed[:2])
    job = ReindexJob.objects.get()
    assert (job.scope, job.total, job.image_ids) == ("selected", 2, [i.pk for i in indexed[:2]])
    assert queued


def test_the_reindex_buttons_start_jobs_and_show_their_page(admin, indexed):
    response = admin.post(f"{LIST}reindex/stale/")
    job = ReindexJob.objects.get()
    assert response["Location"] == f"/admin/catalog/reindexjob/{job.pk}/change/"
    assert (job.scope, job.total) == ("stale", 0)  # everything is embedded with these weights
    assert admin.get(f"{LIST}reindex/all/").status_code == 403  # only by POST
    assert admin.post(f"{LIST}reindex/everything/").status_code == 404


# --- Bulk upload ----------------------------------------------------------------------------


def bulk_upload(admin, files, tags="") -> BulkUploadJob:
    """Upload in the admin: the page answers at once with the job's page, which the worker
    (here, the task run in this process) then fills."""
    response = admin.post(f"{LIST}bulk-upload/", {"files": files, "tags": tags})
    job = BulkUploadJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/catalog/bulkuploadjob/{job.pk}/change/"
    return job


def job_page(admin, job: BulkUploadJob) -> str:
    response = admin.get(f"/admin/catalog/bulkuploadjob/{job.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_bulk_upload_answers_at_once_and_creates_no_image_in_the_request(
    admin, django_capture_on_commit_callbacks
):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in NAMES:
            zipped.writestr(name, photo_bytes(name))
    with django_capture_on_commit_callbacks() as queued:
        job = bulk_upload(admin, [ContentFile(archive.getvalue(), name="three.zip")])
    assert not CatalogImage.objects.exists()
    assert job.state == "queued" and len(queued) == 1  # the job's task, sent after commit
    page = job_page(admin, job)
    assert 'http-equiv="refresh"' in page  # it watches the job until it is done
    assert "Queued" in page


def test_bulk_upload_takes_pictures_and_zips_and_says_what_it_refused(admin):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("cats/chelsea.jpg", photo_bytes("chelsea.png"))
        zipped.writestr("brick.webp", encode(photo("brick.png"), "WEBP"))
        zipped.writestr("broken.jpg", b"\xff\xd8 nope")
    files = [
        ContentFile(photo_bytes("coffee.png"), name="coffee.jpg"),
        ContentFile(archive.getvalue(), name="more.zip"),
        ContentFile(b"hello", name="notes.png"),
        ContentFile(b"not a zip", name="bad.zip"),
    ]
    job = bulk_upload(admin, files, tags="Upload")
    tasks.run_bulk_upload_job(job.pk)
    page = job_page(admin, job)
    assert "3 added, 0 already in the catalog, 3 refused." in page
    assert "more.zip:broken.jpg" in page and "notes.png" in page and "bad.zip" in page
    assert "6 of 6 read" in page
    assert 'http-equiv="refresh"' not in page  # done: nothing left to watch
    assert CatalogImage.objects.count() == 3
    assert all(tags == ["upload"] for tags in CatalogImage.objects.values_list("tags", flat=True))


def test_bulk_upload_reports_hostile_zips_and_still_imports_and_queues_the_rest(
    admin, tmp_path, django_capture_on_commit_callbacks
):
    from tests.catalog.test_importing import add_zeros, corrupt_member_data, write_zip

    bomb = write_zip(tmp_path / "bomb.zip", {"cat.jpg": photo_bytes("chelsea.png")})
    add_zeros(bomb, "huge.bmp", 100 * 1024 * 1024)
    corrupt = write_zip(tmp_path / "corrupt.zip", {"x.bmp": encode(photo("rocket.jpg"), "BMP")})
    corrupt_member_data(corrupt, "x.bmp")
    files = [
        ContentFile(bomb.read_bytes(), name="bomb.zip"),
        ContentFile(corrupt.read_bytes(), name="corrupt.zip"),
        ContentFile(b"PK\x03\x04 truncated", name="fake.zip"),
        ContentFile(photo_bytes("coffee.png"), name="coffee.jpg"),
    ]
    job = bulk_upload(admin, files)
    with django_capture_on_commit_callbacks() as queued:
        tasks.run_bulk_upload_job(job.pk)
    page = job_page(admin, job)
    assert "2 added, 0 already in the catalog, 3 refused." in page
    assert "bomb.zip:huge.bmp</strong>: inflates to more than 100 times" in page
    assert "corrupt.zip:x.bmp</strong>: is corrupt inside the zip file" in page
    assert "fake.zip</strong>: is not a zip file" in page
    assert sorted(CatalogImage.objects.values_list("title", flat=True)) == ["cat", "coffee"]
    assert queued  # their indexing


def test_a_bulk_upload_that_cannot_be_staged_says_so_and_keeps_nothing(admin, settings, tmp_path):
    settings.STAGING_ROOT = tmp_path / "not-a-folder" / "staging"
    (tmp_path / "not-a-folder").write_text("a file where the folder would go")
    response = admin.post(f"{LIST}bulk-upload/", {"files": [photo_file("coffee.png")]})
    assert response.status_code == 200
    assert "nothing was saved" in response.content.decode()
    assert not BulkUploadJob.objects.exists()


def test_a_curator_who_may_only_add_images_follows_the_upload_to_its_job_page(
    client, django_user_model
):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("adder", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="add_catalogimage"))
    client.force_login(user)
    response = client.post(f"{LIST}bulk-upload/", {"files": [photo_file("coffee.png")]})
    assert response.status_code == 302
    assert client.get(response["Location"]).status_code == 200


def test_the_bulk_upload_job_page_lists_only_its_first_failure_lines(admin, monkeypatch):
    from catalog.admin import jobs as job_admin

    monkeypatch.setattr(job_admin, "FAILURE_LINES_SHOWN", 2)  # of 500, for a short test
    files = [ContentFile(b"nope", name=f"{index}.jpg") for index in range(5)]
    job = bulk_upload(admin, files)
    tasks.run_bulk_upload_job(job.pk)
    page = job_page(admin, job)
    refused = page.split('<ul id="bulk-refused">')[1].split("</ul>")[0]
    assert refused.count("<li>") == 2 and "<strong>0.jpg</strong>" in refused
    assert "and 3 more" in page


# --- Jobs ---------------------------------------------------------------------------------


def run_to_the_end(job: ReindexJob) -> ReindexJob:
    while jobs.reindex_job_run_batch(job_id=job.pk):
        pass
    job.refresh_from_db()
    return job


def test_a_cancelled_job_stops_after_its_batch(admin, indexed, settings):
    settings.INDEX_BATCH_SIZE = 1
    job = jobs.reindex_job_start(scope="all")
    assert jobs.reindex_job_run_batch(job_id=job.pk)
    response = admin.post(f"/admin/catalog/reindexjob/{job.pk}/cancel/")
    assert response.status_code == 302
    assert not jobs.reindex_job_run_batch(job_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.done) == ("cancelled", 1)


def test_the_job_page_refreshes_itself_while_running(admin, indexed):
    job = jobs.reindex_job_start(scope="all")
    page = admin.get(f"/admin/catalog/reindexjob/{job.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' in page and 'id="cancel-job"' in page
    run_to_the_end(job)
    page = admin.get(f"/admin/catalog/reindexjob/{job.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' not in page
    assert "100.0%" in page


def test_the_list_costs_the_same_number_of_queries_for_10_or_50_rows(admin):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def rows(n: int, start: int) -> None:
        CatalogImage.objects.bulk_create(
            CatalogImage(sha256=f"{i:064x}", title=f"image {i}", tags=["t"], status="indexed",
                         thumbnail_url=f"/media/{i}.webp")
            for i in range(start, start + n)
        )  # fmt: skip

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin.get(LIST).status_code == 200
        return len(captured)

    rows(10, 0)
    with_10 = queries()
    rows(40, 10)
    assert queries() == with_10  # no query per row


def test_a_tag_edit_in_the_admin_reaches_the_vector_stores_filter(
    admin, indexed, eager_celery, django_capture_on_commit_callbacks
):
    coffee = indexed[0]
    vector = get_vector_store().query(coffee.embedding_vector, top_k=1)
    assert get_vector_store().query(coffee.embedding_vector, top_k=3, where={"tags": ["mug"]}) == []
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin.post(
            f"{LIST}{coffee.pk}/change/",
            {"title": coffee.title, "tags": "Mug, morning", "is_active": "on"},
        )
    assert answer.status_code == 302, answer.content[:500]
    found = get_vector_store().query(coffee.embedding_vector, top_k=3, where={"tags": ["mug"]})
    assert [match.id for match in found] == [vector[0].id] == [str(coffee.pk)]


def test_deactivating_says_the_files_leave_the_image_host_and_delete_removes_for_good(
    admin, indexed, django_capture_on_commit_callbacks, eager_celery, settings
):
    coffee = indexed[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            LIST, {"action": "deactivate", "_selected_action": [coffee.pk]}, follow=True
        )
    page = response.content.decode()
    assert "taken off the image host" in page and "delete it" in page
    assert not (settings.MEDIA_ROOT / coffee.hosted_key).exists()
    form = admin.get(f"{LIST}{coffee.pk}/change/").content.decode()
    assert "kept off the image host" in form  # the preview and the field's help say so
