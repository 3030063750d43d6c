"""The limits both search doors share: request shape, rate limit, size cap, client address."""

import json

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile

from catalog import services
from tests.conftest import b64, photo_bytes, photo_file

pytestmark = pytest.mark.django_db
SEARCH = "/api/search/"


@pytest.fixture
def catalog():
    image, _ = services.image_create(file=photo_file("coffee.png"), title="coffee")
    services.images_index(image_ids=[image.pk])
    return image


@pytest.fixture
def fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


def error_of(response, status=400) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["detail"]
    return body["error"]


def page_error(response) -> tuple[int, str]:
    """The status and the error code the no-JS page shows."""
    page = response.content.decode()
    assert 'class="error"' in page, page
    return response.status_code, page.split('data-error-code="')[1].split('"')[0]


# --- Request shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("body", ["[]", "null", "12", '"an image"', "true", '[{"image": "x"}]'])
def test_a_json_body_that_is_not_an_object_is_a_malformed_request(client, body):
    response = client.post(SEARCH, body, content_type="application/json")
    assert error_of(response) == "malformed_request"


@pytest.mark.parametrize("image_id", [2**63, 10**30, -1, 0, 1.5, True, "1e3", [1], {"a": 1}])
def test_an_image_id_out_of_range_or_of_the_wrong_type_is_refused(client, image_id):
    response = client.post(SEARCH, {"image_id": image_id}, content_type="application/json")
    assert error_of(response) == "invalid_image_id"


@pytest.mark.parametrize("top_k", [10**30, -5, 2.5, "", None, [3], {"k": 1}])
def test_a_top_k_of_the_wrong_shape_is_refused(client, top_k):
    response = client.post(SEARCH, {"image_id": 1, "top_k": top_k}, content_type="application/json")
    assert error_of(response) == "invalid_top_k"


def test_a_json_body_with_invalid_utf8_is_a_malformed_request(client):
    response = client.post(SEARCH, b'{"image": "\xff\xfe"}', content_type="application/json")
    assert error_of(response) == "malformed_request"


# --- The rate limit keys on the real client ----------------------------------------------


def test_a_new_forwarded_for_value_on_each_request_does_not_bypass_the_limit(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "2/min"
    codes = [
        client.post(
            SEARCH,
            {"image_id": catalog.pk},
            content_type="application/json",
            headers={"X-Forwarded-For": f"10.0.0.{n}"},
        ).status_code
        for n in range(4)
    ]
    assert codes == [200, 200, 429, 429]


def test_behind_one_trusted_proxy_the_address_it_saw_is_the_client(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "1/min"
    settings.TRUSTED_PROXIES = 1

    def from_(chain: str) -> int:
        return client.post(
            SEARCH,
            {"image_id": catalog.pk},
            content_type="application/json",
            headers={"X-Forwarded-For": chain},
            REMOTE_ADDR="10.9.9.9",
        ).status_code

    assert from_("203.0.113.7") != 429
    # The client forges a left-hand address; the proxy appends the real one.
    assert from_("198.51.100.1, 203.0.113.7") == 429
    assert from_("203.0.113.8") != 429  # a different client has its own budget


def test_the_client_address_ignores_the_header_without_trusted_proxies(rf, settings):
    from search.limits import client_ip

    settings.TRUSTED_PROXIES = 0
    request = rf.get("/", headers={"X-Forwarded-For": "1.2.3.4"}, REMOTE_ADDR="10.0.0.1")
    assert client_ip(request) == "10.0.0.1"
    settings.TRUSTED_PROXIES = 2
    request = rf.get("/", headers={"X-Forwarded-For": "6.6.6.6, 1.2.3.4, 10.0.0.2"})
    assert client_ip(request) == "1.2.3.4"


# --- The no-JavaScript form has the API's limits and codes -------------------------------


def test_the_form_is_rate_limited_with_the_apis_budget(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "2/min"
    upload = photo_bytes("coffee.png")
    assert client.post("/", {"image": ContentFile(upload, name="a.jpg")}).status_code == 200
    api = client.post(SEARCH, {"image": b64(upload)}, content_type="application/json")
    assert api.status_code == 200
    response = client.post("/", {"image": ContentFile(upload, name="a.jpg")})
    assert page_error(response) == (429, "throttled")
    assert "try again in" in response.content.decode()


def test_the_form_refuses_a_body_over_the_limit_before_reading_it(client, settings, monkeypatch):
    settings.IMAGE_MAX_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000

    def no_parsing(*args, **kwargs):
        raise AssertionError("an oversized body must not be parsed")

    monkeypatch.setattr("django.http.multipartparser.MultiPartParser.parse", no_parsing)
    response = client.post("/", {"image": ContentFile(b"x" * 50_000, name="big.jpg")})
    assert page_error(response) == (400, "image_too_large")


def test_the_form_and_the_api_refuse_an_oversized_file_with_the_same_sentence(client, settings):
    settings.IMAGE_MAX_BYTES = 10_000
    data = photo_bytes("coffee.png")
    api = client.post(SEARCH, {"image": ContentFile(data, name="a.jpg")}).json()
    form = client.post("/", {"image": ContentFile(data, name="a.jpg")}).content.decode()
    assert api["error"] == "image_too_large"
    assert api["detail"] in form


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"plain text", "not_an_image"),
        (photo_bytes()[:2000], "corrupt_image"),
    ],
)
def test_the_form_shows_the_apis_error_code(client, data, code):
    response = client.post("/", {"image": ContentFile(data, name="a.jpg")})
    assert page_error(response) == (400, code)
    api = client.post(SEARCH, {"image": ContentFile(data, name="a.jpg")})
    assert error_of(api) == code


def test_the_form_refuses_an_unknown_image_id_like_the_api(client):
    assert page_error(client.post("/", {"image_id": "999999"})) == (404, "image_not_found")
    assert page_error(client.post("/", {"image_id": str(10**30)}))[1] == "invalid_image_id"


def test_every_door_that_takes_a_file_gives_the_same_too_large_sentence(
    client, staff_client, settings
):
    from search.imaging import too_large_error

    settings.IMAGE_MAX_BYTES = 10_000
    expected = too_large_error(10_000).detail
    big = photo_bytes("coffee.png")
    api = client.post(SEARCH, {"image": b64(big)}, content_type="application/json").json()
    upload = staff_client.post("/api/images/", {"image": ContentFile(big, name="a.jpg")}).json()
    with pytest.raises(Exception) as refused:
        services.image_create(file=ContentFile(big, name="a.jpg"))
    assert api["detail"] == upload["detail"] == refused.value.detail == expected
    assert json.dumps(expected)  # one sentence, same everywhere
