"""Who sees and changes what: the public catalog API, model permissions in API and admin."""

import pytest
from django.contrib.auth.models import Permission

from catalog import services
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline import jobs
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db
LIST = "/admin/catalog/catalogimage/"
PUBLIC_FIELDS = {
    *("id", "title", "tags", "image_url", "thumbnail_url", "width", "height"),
    *("external_id", "link_url", "metadata"),
}


@pytest.fixture
def images():
    """One of each: indexed, deactivated (indexed before), failed, pending."""
    rows = {
        name: services.image_create(file=photo_file(f"{name}.png"), enqueue=False)[0]
        for name in ("coffee", "chelsea", "astronaut", "camera")
    }
    images_index(image_ids=[rows["coffee"].pk, rows["chelsea"].pk])
    CatalogImage.objects.filter(pk=rows["chelsea"].pk).update(is_active=False)
    CatalogImage.objects.filter(pk=rows["astronaut"].pk).update(
        status="failed", failure_reason="/srv/var/staging/ab/secret.png: provider said 500"
    )
    return rows


def user_client(client, django_user_model, *perms: str, name="viewer"):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="catalog", codename__in=perms)
    )
    client.force_login(user)
    return client


# --- The public catalog ------------------------------------------------------------------


def test_anonymous_users_see_only_active_indexed_images_and_public_fields(client, images):
    body = client.get("/api/images/").json()
    assert [row["id"] for row in body["results"]] == [images["coffee"].pk]
    assert set(body["results"][0]) == PUBLIC_FIELDS
    assert "secret" not in client.get("/api/images/?status=failed").content.decode()


def test_anonymous_users_cannot_read_a_hidden_image_by_id(client, images):
    for name in ("chelsea", "astronaut", "camera"):
        response = client.get(f"/api/images/{images[name].pk}/")
        assert response.status_code == 404, name
        assert response.json()["error"] == "image_not_found"
    visible = client.get(f"/api/images/{images['coffee'].pk}/").json()
    assert set(visible) == PUBLIC_FIELDS


def test_staff_with_view_permission_see_everything(client, django_user_model, images):
    viewer = user_client(client, django_user_model, "view_catalogimage")
    body = viewer.get("/api/images/").json()
    assert body["count"] == 4
    failed = viewer.get("/api/images/?status=failed").json()["results"][0]
    assert failed["failure_reason"].startswith("/srv/var")
    assert viewer.get(f"/api/images/{images['chelsea'].pk}/").json()["is_active"] is False


def test_staff_with_change_permission_see_everything_as_admin_shows_them(
    client, django_user_model, images
):
    # Django admin lets a change permission view too; the API agrees.
    editor = user_client(client, django_user_model, "change_catalogimage", name="editor")
    assert editor.get("/api/images/").json()["count"] == 4


# --- Uploads answer with what the uploader may see ---------------------------------------


def test_an_add_only_curator_sees_only_public_fields_of_a_duplicate(
    client, django_user_model, images
):
    adder = user_client(client, django_user_model, "add_catalogimage", name="adder")
    response = adder.post("/api/images/", {"image": photo_file("astronaut.png")})  # the failed one
    assert response.status_code == 200
    body = response.json()
    assert body["duplicate"] is True
    assert set(body) == PUBLIC_FIELDS | {"duplicate"}
    assert "secret" not in response.content.decode()


def test_an_add_only_curator_sees_the_public_fields_of_a_new_upload(client, django_user_model):
    adder = user_client(client, django_user_model, "add_catalogimage", name="adder")
    response = adder.post("/api/images/", {"image": photo_file("moon.png"), "title": "Moon"})
    assert response.status_code == 201
    assert set(response.json()) == PUBLIC_FIELDS | {"duplicate"}
    assert response.json()["title"] == "Moon"


def test_a_curator_who_may_view_sees_every_field_of_a_duplicate(client, django_user_model, images):
    curator = user_client(client, django_user_model, "view_catalogimage", "add_catalogimage")
    body = curator.post("/api/images/", {"image": photo_file("astronaut.png")}).json()
    assert body["duplicate"] is True
    assert body["failure_reason"].startswith("/srv/var")


# --- API writes need the model permission ------------------------------------------------


def test_staff_without_the_add_permission_cannot_upload(client, django_user_model):
    viewer = user_client(client, django_user_model, "view_catalogimage")
    response = viewer.post("/api/images/", {"image": photo_file("moon.png")})
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert not CatalogImage.objects.exists()


def test_staff_without_the_delete_permission_cannot_delete(client, django_user_model, images):
    adder = user_client(client, django_user_model, "view_catalogimage", "add_catalogimage")
    response = adder.delete(f"/api/images/{images['coffee'].pk}/")
    assert response.status_code == 403
    assert CatalogImage.objects.filter(pk=images["coffee"].pk).exists()
    assert adder.post("/api/images/", {"image": photo_file("moon.png")}).status_code == 201


# --- Admin actions need the model permission ---------------------------------------------


@pytest.mark.parametrize("action", ["deactivate", "activate", "reindex_selected", "retry_failed"])
def test_view_only_staff_cannot_run_catalog_actions(client, django_user_model, images, action):
    viewer = user_client(client, django_user_model, "view_catalogimage", "view_reindexjob")
    before = list(CatalogImage.objects.order_by("pk").values_list("pk", "is_active", "status"))
    response = viewer.post(
        LIST, {"action": action, "_selected_action": [images["coffee"].pk, images["astronaut"].pk]}
    )
    assert response.status_code in (200, 302, 403)
    after = list(CatalogImage.objects.order_by("pk").values_list("pk", "is_active", "status"))
    assert after == before
    assert not ReindexJob.objects.exists()


def test_view_only_staff_do_not_see_the_actions(client, django_user_model, images):
    viewer = user_client(client, django_user_model, "view_catalogimage")
    page = viewer.get(LIST).content.decode()
    assert 'value="deactivate"' not in page
    assert 'value="reindex_selected"' not in page


def test_view_only_staff_cannot_cancel_a_job(client, django_user_model, images):
    job = jobs.reindex_job_start(scope="all")
    viewer = user_client(client, django_user_model, "view_catalogimage", "view_reindexjob")
    viewer.post("/admin/catalog/reindexjob/", {"action": "cancel", "_selected_action": [job.pk]})
    assert viewer.post(f"/admin/catalog/reindexjob/{job.pk}/cancel/").status_code == 403
    job.refresh_from_db()
    assert not job.cancel_requested


def test_view_only_staff_cannot_start_a_reindex(client, django_user_model, images):
    viewer = user_client(client, django_user_model, "view_catalogimage", "view_reindexjob")
    assert viewer.post(f"{LIST}reindex/all/").status_code == 403
    assert not ReindexJob.objects.exists()


def test_staff_with_change_permission_can_deactivate(client, django_user_model, images):
    editor = user_client(
        client, django_user_model, "view_catalogimage", "change_catalogimage", name="editor"
    )
    editor.post(LIST, {"action": "deactivate", "_selected_action": [images["coffee"].pk]})
    assert CatalogImage.objects.get(pk=images["coffee"].pk).is_active is False


# --- The admin add form ------------------------------------------------------------------


def test_the_add_form_keeps_an_unticked_is_active(admin_client):
    response = admin_client.post(
        f"{LIST}add/", {"image": photo_file("coffee.png"), "title": "Hidden", "tags": ""}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    image = CatalogImage.objects.get()
    assert image.title == "Hidden"
    assert image.is_active is False
