import pytest

from catalog.models import CatalogImage
from search.vectorstores import get_vector_store
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db
ADD = "/admin/catalog/catalogimage/add/"


@pytest.fixture
def admin(admin_client):
    return admin_client


def add(admin, name="coffee.png", **fields):
    return admin.post(
        ADD, {"image": photo_file(name), "title": "", "tags": "", "is_active": "on", **fields}
    )


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
    from django.core.files.base import ContentFile

    response = admin.post(ADD, {"image": ContentFile(b"nope", name="x.jpg"), "tags": ""})
    assert response.status_code == 200
    assert b"not an image" in response.content
    assert not CatalogImage.objects.exists()


def test_uploading_the_same_bytes_twice_keeps_one_row(admin):
    add(admin)
    add(admin, title="again")
    assert CatalogImage.objects.count() == 1


def test_the_list_shows_status_and_filters_by_it(admin):
    add(admin)
    response = admin.get("/admin/catalog/catalogimage/?status__exact=pending")
    assert response.status_code == 200
    assert b"Pending" in response.content


def test_deactivating_in_the_admin_removes_the_vector(
    admin, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        add(admin)
    image = CatalogImage.objects.get()
    assert get_vector_store().count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(
            f"/admin/catalog/catalogimage/{image.pk}/change/",
            {"title": "Coffee", "tags": "", "is_active": ""},
        )
    image.refresh_from_db()
    assert image.is_active is False
    assert get_vector_store().count() == 0


def test_deleting_in_bulk_removes_rows_and_vectors(
    admin, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        add(admin, "coffee.png")
        add(admin, "rocket.jpg")
    ids = [str(pk) for pk in CatalogImage.objects.values_list("pk", flat=True)]
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(
            "/admin/catalog/catalogimage/",
            {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
        )
    assert not CatalogImage.objects.exists()
    assert get_vector_store().count() == 0


def test_the_retry_action_requeues_failed_images(admin, django_capture_on_commit_callbacks):
    add(admin)
    CatalogImage.objects.update(status="failed", failure_reason="boom")
    image = CatalogImage.objects.get()
    with django_capture_on_commit_callbacks() as queued:
        admin.post(
            "/admin/catalog/catalogimage/",
            {"action": "retry_indexing", "_selected_action": [image.pk]},
        )
    assert queued
    image.refresh_from_db()
    assert image.status == "pending"
