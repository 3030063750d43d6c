import pytest
from django.core.files.base import ContentFile

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from tests.conftest import b64, encode, photo, photo_bytes, photo_file

pytestmark = pytest.mark.django_db
SEARCH = "/api/search/"
DEMO = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"]


def search(client, **body):
    return client.post(SEARCH, body, content_type="application/json")


def error_of(response, status=400) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["detail"]  # a sentence that says what to do
    return body["error"]


def test_searching_with_a_catalog_image_finds_it_first(client, catalog):
    response = search(client, image=b64(photo_bytes("coffee.png")), top_k=3)
    assert response.status_code == 200
    body = response.json()
    first = body["results"][0]
    assert first["id"] == catalog["coffee.png"].pk
    assert first["title"] == "coffee"
    assert first["similarity"] >= 99.0
    assert first["score"] == pytest.approx(1.0, abs=1e-4)
    assert first["image_url"].startswith("http://testserver/media/catalog/")
    assert first["thumbnail_url"]
    assert len(body["results"]) == 3
    assert body["model"] == "resnet50/random-seed0"
    assert body["took_ms"] > 0
    assert "not meaningful" in body["warning"]


def test_results_are_ordered_by_score(client, catalog):
    results = search(client, image=b64(photo_bytes("rocket.jpg"))).json()["results"]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert {r["similarity"] for r in results} <= {round(s * 100, 1) for s in scores}


def test_a_data_url_works_like_base64(client, catalog):
    url = "data:image/jpeg;base64," + b64(photo_bytes("chelsea.png"))
    assert search(client, image=url).json()["results"][0]["id"] == catalog["chelsea.png"].pk


def test_a_multipart_upload_works_like_base64(client, catalog):
    upload = ContentFile(photo_bytes("brick.png"), name="brick.jpg")
    response = client.post(SEARCH, {"image": upload, "top_k": "2"})
    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == catalog["brick.png"].pk


def test_top_k_defaults_to_twelve_and_is_bounded_by_the_catalog(client, catalog):
    assert len(search(client, image=b64(photo_bytes())).json()["results"]) == len(DEMO)


def test_an_empty_catalog_gives_no_results(client):
    assert search(client, image=b64(photo_bytes())).json()["results"] == []


def test_inactive_and_deleted_images_never_appear(
    client, catalog, django_capture_on_commit_callbacks
):
    CatalogImage.objects.filter(pk=catalog["coffee.png"].pk).update(is_active=False)
    services.image_delete(image=catalog["chelsea.png"])  # vector removal not run yet
    ids = [r["id"] for r in search(client, image=b64(photo_bytes("coffee.png"))).json()["results"]]
    assert catalog["coffee.png"].pk not in ids
    assert catalog["chelsea.png"].pk not in ids
    assert len(ids) == 3


def test_results_carry_the_items_external_id_link_and_metadata(client, catalog):
    coffee = catalog["coffee.png"]
    services.image_update(
        image=coffee, external_id="sku-7", link_url="https://shop.example/7", metadata={"p": 3}
    )
    images_index(image_ids=[coffee.pk])
    results = search(client, image=b64(photo_bytes("coffee.png"))).json()["results"]
    first, other = results[0], results[1]
    assert (first["external_id"], first["link_url"], first["metadata"]) == (
        "sku-7",
        "https://shop.example/7",
        {"p": 3},
    )
    assert (other["external_id"], other["link_url"], other["metadata"]) == ("", "", {})


def test_titles_come_from_the_database(client, catalog):
    CatalogImage.objects.filter(pk=catalog["rocket.jpg"].pk).update(title="Renamed")
    first = search(client, image=b64(photo_bytes("rocket.jpg"))).json()["results"][0]
    assert first["title"] == "Renamed"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "missing_image"),
        ({"image": ""}, "empty_image"),
        ({"image": "data:image/png;base64,"}, "empty_image"),
        ({"image": "%%% not base64 %%%"}, "invalid_base64"),
        ({"image": ["a list"]}, "invalid_base64"),
        ({"image": "QUJD\ud800RA=="}, "invalid_base64"),  # a lone surrogate inside
        ({"image": "data:image/png;base64,\u00e9t\u00e9"}, "invalid_base64"),
        ({"image": b64(b"just some text, not a picture")}, "not_an_image"),
        ({"image": b64(encode(photo().resize((32, 32)), "PCX"))}, "unsupported_format"),
        ({"image": b64(photo_bytes()[:3000])}, "corrupt_image"),
        ({"image": b64(photo_bytes()), "top_k": 0}, "invalid_top_k"),
        ({"image": b64(photo_bytes()), "top_k": 101}, "invalid_top_k"),
        ({"image": b64(photo_bytes()), "top_k": "many"}, "invalid_top_k"),
    ],
)
def test_bad_input_gets_a_400_with_a_stable_code(client, body, code):
    assert error_of(search(client, **body)) == code


def test_too_many_bytes_is_refused(client, settings):
    settings.IMAGE_MAX_BYTES = 10_000
    assert error_of(search(client, image=b64(photo_bytes()))) == "image_too_large"


def test_a_body_too_large_to_be_an_image_is_refused_before_it_is_read(client, settings):
    settings.IMAGE_MAX_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    assert error_of(search(client, image="A" * 5000)) == "image_too_large"


def test_too_many_pixels_is_refused(client, settings):
    settings.IMAGE_MAX_PIXELS = 100 * 100
    assert error_of(search(client, image=b64(photo_bytes()))) == "too_many_pixels"


def test_malformed_json_is_refused(client):
    response = client.post(SEARCH, "{not json", content_type="application/json")
    assert error_of(response) == "malformed_request"


def test_search_needs_post(client):
    assert error_of(client.get(SEARCH), 405) == "method_not_allowed"


def test_searching_by_a_catalog_image_uses_its_embedding_and_leaves_it_out(
    client, catalog, monkeypatch
):
    from search import services as search_services

    def no_model(*args, **kwargs):
        raise AssertionError("searching by id must not run the model")

    monkeypatch.setattr(search_services, "get_encoder", no_model)
    coffee = catalog["coffee.png"]
    response = search(client, image_id=coffee.pk, top_k=10)
    assert response.status_code == 200, response.content
    ids = [r["id"] for r in response.json()["results"]]
    assert coffee.pk not in ids
    assert len(ids) == len(DEMO) - 1


def test_searching_by_an_unknown_image_says_so(client, catalog):
    assert error_of(search(client, image_id=999999), 404) == "image_not_found"
    assert error_of(search(client, image_id="seven")) == "invalid_image_id"
    both = search(client, image_id=catalog["coffee.png"].pk, image=b64(photo_bytes()))
    assert error_of(both) == "ambiguous_query"


def test_a_hidden_image_is_as_unknown_to_a_search_by_id_as_a_missing_one(client, catalog):
    """Pending, processing, failed or deactivated: the answer is the one for an id that does
    not exist, so nobody learns which hidden ids do."""
    pending, _ = services.image_create(file=photo_file("moon.png"))
    hidden = {
        "pending": pending.pk,
        "processing": catalog["coffee.png"].pk,
        "failed": catalog["chelsea.png"].pk,
        "deactivated": catalog["rocket.jpg"].pk,
    }
    CatalogImage.objects.filter(pk=hidden["processing"]).update(status="processing")
    CatalogImage.objects.filter(pk=hidden["failed"]).update(status="failed")
    CatalogImage.objects.filter(pk=hidden["deactivated"]).update(is_active=False)
    unknown = search(client, image_id=999999).json()
    for kind, image_id in hidden.items():
        response = search(client, image_id=image_id)
        assert error_of(response, 404) == "image_not_found", kind
        assert response.json()["detail"] == unknown["detail"].replace("999999", str(image_id))


def test_a_public_image_indexed_with_other_weights_says_so(client, catalog):
    # Public and indexed, so saying it waits for the current model hides nothing.
    coffee = catalog["coffee.png"].pk
    CatalogImage.objects.filter(pk=coffee).update(embedding_model="resnet50/older-weights")
    assert error_of(search(client, image_id=coffee), 409) == "image_not_indexed"


def test_only_active_indexed_images_appear_in_results(client, catalog):
    # Their vectors are still in the store: a reindex, or a failure after indexing.
    CatalogImage.objects.filter(pk=catalog["coffee.png"].pk).update(status="processing")
    CatalogImage.objects.filter(pk=catalog["chelsea.png"].pk).update(status="failed")
    CatalogImage.objects.filter(pk=catalog["brick.png"].pk).update(status="pending")
    for body in ({"image": b64(photo_bytes("coffee.png"))}, {"image_id": catalog["rocket.jpg"].pk}):
        ids = {r["id"] for r in search(client, **body, top_k=10).json()["results"]}
        assert ids <= {catalog["astronaut.png"].pk, catalog["rocket.jpg"].pk}, body


def test_too_many_searches_are_throttled(client, settings, catalog):
    from django.core.cache import cache

    cache.clear()
    settings.SEARCH_RATE_LIMIT = "2/min"
    for _ in range(2):
        assert search(client, image_id=catalog["coffee.png"].pk).status_code == 200
    assert error_of(search(client, image_id=catalog["coffee.png"].pk), 429) == "throttled"
    cache.clear()


# --- Catalog API -------------------------------------------------------------------------


def test_the_catalog_lists_images_with_their_status(staff_client, catalog):
    client = staff_client
    body = client.get("/api/images/").json()
    assert body["count"] == len(DEMO)
    assert {row["status"] for row in body["results"]} == {"indexed"}
    assert "embedding" not in body["results"][0]
    failed = client.get("/api/images/?status=failed").json()
    assert failed["count"] == 0


def test_an_image_can_be_read_by_id(client, catalog):
    image = catalog["coffee.png"]
    body = client.get(f"/api/images/{image.pk}/").json()
    assert (body["id"], body["width"], body["height"]) == (image.pk, 600, 400)
    assert error_of(client.get("/api/images/999999/"), 404) == "image_not_found"


def test_anonymous_users_cannot_upload_or_delete(client, catalog):
    upload = client.post("/api/images/", {"image": photo_file("moon.png")})
    assert error_of(upload, 403) == "not_authenticated"
    image = catalog["coffee.png"]
    assert error_of(client.delete(f"/api/images/{image.pk}/"), 403) == "not_authenticated"


def test_staff_can_upload_and_the_upload_is_queued_for_indexing(
    staff_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            "/api/images/", {"image": photo_file("moon.png"), "title": "Moon", "tags": "space"}
        )
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    assert response.json()["tags"] == ["space"]
    assert len(callbacks) == 1
    again = staff_client.post("/api/images/", {"image": photo_file("moon.png")})
    assert again.status_code == 200
    assert again.json()["duplicate"] is True


def test_an_uploaded_non_image_is_refused(staff_client):
    response = staff_client.post("/api/images/", {"image": ContentFile(b"hi", name="a.jpg")})
    assert error_of(response) == "not_an_image"
    assert error_of(staff_client.post("/api/images/", {})) == "missing_image"


def test_a_token_authenticates_staff(client, django_user_model):
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("bot", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="add_catalogimage"))
    token = Token.objects.create(user=user)
    response = client.post(
        "/api/images/",
        {"image": photo_file("moon.png")},
        headers={"Authorization": f"Token {token.key}"},
    )
    assert response.status_code == 201


def test_staff_can_delete_an_image(
    staff_client, catalog, eager_celery, django_capture_on_commit_callbacks
):
    from search.vectorstores import get_vector_store

    image = catalog["coffee.png"]
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.delete(f"/api/images/{image.pk}/").status_code == 204
    assert not CatalogImage.objects.filter(pk=image.pk).exists()
    assert str(image.pk) not in get_vector_store().ids()


# --- Health ------------------------------------------------------------------------------


def test_health_reports_every_part(staff_client, catalog):
    response = staff_client.get("/api/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"]
    assert body["vector_store"] == {"ok": True, "backend": "local", "count": 5, "dimension": 2048}
    assert body["model"]["id"] == "resnet50/random-seed0"
    assert body["model"]["random_weights"] is True
    assert "not meaningful" in body["model"]["warning"]


def test_health_says_503_when_the_broker_is_down(staff_client, settings):
    client = staff_client
    from visualsearch.celery import app

    previous = app.conf.broker_write_url
    app.conf.broker_write_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        response = client.get("/api/health/")
    finally:
        app.conf.broker_write_url = previous
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False


# --- Query decoding ----------------------------------------------------------------------


def test_a_query_is_held_to_its_own_lower_pixel_limit(client):
    from PIL import Image

    bilevel = encode(Image.new("1", (6000, 6000)), "PNG")  # 36 M pixels in a few kB
    assert error_of(search(client, image=b64(bilevel))) == "too_many_pixels"
    image, _ = services.image_create(file=ContentFile(bilevel, name="flat.png"))
    assert image.width == 6000  # the catalog still takes it


def test_a_big_photo_finds_its_catalog_copy_with_the_identical_vector(client):
    # Both paths decode at the model's resize size, so they must agree to the last bit.
    big = encode(photo("chelsea.png").resize((4000, 3000)), quality=90)
    image, _ = services.image_create(file=ContentFile(big, name="big.jpg"))
    images_index(image_ids=[image.pk])
    first = search(client, image=b64(big), top_k=1).json()["results"][0]
    assert first["id"] == image.pk
    assert first["score"] == pytest.approx(1.0, abs=1e-6)


def test_the_image_text_is_not_checked_character_by_character_in_python():
    """DRF's CharField walks every character looking for surrogates: on a 10 MB picture
    that loop cost more than the model. The base64 decoder refuses them anyway (above)."""
    from rest_framework.validators import ProhibitSurrogateCharactersValidator

    from search.apis import SearchApi

    field = SearchApi.InputSerializer().fields["image"]
    assert not any(isinstance(v, ProhibitSurrogateCharactersValidator) for v in field.validators)
