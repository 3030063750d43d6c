"""The limits both search doors share: request shape, rate limit, size cap, client address."""

import json

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import b64, photo_bytes, photo_file

pytestmark = pytest.mark.django_db
SEARCH = "/api/search/"


@pytest.fixture
def catalog():
    image, _ = services.image_create(file=photo_file("coffee.png"), title="coffee")
    images_index(image_ids=[image.pk])
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


def searches_from(client, image, addresses, **headers) -> list[int]:
    """The status of one search by `image` from each of `addresses` (the connection's)."""
    return [
        client.post(
            SEARCH,
            {"image_id": image.pk},
            content_type="application/json",
            headers=headers,
            REMOTE_ADDR=address,
        ).status_code
        for address in addresses
    ]


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


def test_an_ipv6_client_rotating_through_its_64_shares_one_budget(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "2/min"
    rotating = [f"2001:db8:1:2::{n:x}" for n in range(1, 5)]
    assert searches_from(client, catalog, rotating) == [200, 200, 429, 429]
    # The neighbouring /64 is another household, with its own budget.
    assert searches_from(client, catalog, ["2001:db8:1:3::1"]) == [200]


def test_an_ipv4_address_written_as_ipv6_shares_the_ipv4_budget(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "2/min"
    addresses = ["203.0.113.7", "::ffff:203.0.113.7", "::ffff:cb00:7107"]
    assert searches_from(client, catalog, addresses) == [200, 200, 429]
    assert searches_from(client, catalog, ["203.0.113.8"]) == [200]


# Its key must suit every cache backend (memcached refuses spaces and control characters).
@pytest.mark.filterwarnings("error::django.core.cache.backends.base.CacheKeyWarning")
@pytest.mark.parametrize("address", ["", "unix:/run/gunicorn.sock", "not an address\x00"])
def test_a_connection_address_that_is_not_an_ip_is_limited_as_it_is(
    client, settings, catalog, fresh_rate_limits, address
):
    settings.SEARCH_RATE_LIMIT = "1/min"
    assert searches_from(client, catalog, [address, address]) == [200, 429]


def test_the_budget_of_a_client_outlives_many_other_clients(rf, fresh_rate_limits, settings):
    # A per-process cache that kept only 300 histories would forget the first client here.
    from search.limits import rate_limited

    settings.SEARCH_RATE_LIMIT = "1/min"

    def limited(address: str) -> bool:
        return rate_limited(rf.post(SEARCH, REMOTE_ADDR=address)) is not None

    assert not limited("198.51.100.1")
    for n in range(1000):
        limited(f"10.{n // 250}.{n % 250}.1")
    assert limited("198.51.100.1")


def test_a_forwarded_for_from_a_peer_outside_the_proxy_networks_is_ignored(
    client, settings, catalog, fresh_rate_limits
):
    # A client that reaches the published port directly, past the proxy.
    settings.SEARCH_RATE_LIMIT = "2/min"
    settings.TRUSTED_PROXIES = 1
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    codes = [
        searches_from(client, catalog, ["203.0.113.50"], **{"X-Forwarded-For": f"198.51.100.{n}"})[
            0
        ]
        for n in range(4)
    ]
    assert codes == [200, 200, 429, 429]


def test_behind_one_trusted_proxy_the_address_it_saw_is_the_client(
    client, settings, catalog, fresh_rate_limits
):
    settings.SEARCH_RATE_LIMIT = "1/min"
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]

    def from_(chain: str) -> int:
        return searches_from(client, catalog, ["10.9.9.9"], **{"X-Forwarded-For": chain})[0]

    assert from_("203.0.113.7") != 429
    # The client forges a left-hand address; the proxy appends the real one.
    assert from_("198.51.100.1, 203.0.113.7") == 429
    assert from_("203.0.113.8") != 429  # a different client has its own budget


def client_ip_of(rf, remote: str, chain: str | None = None) -> str:
    from search.limits import client_ip

    headers = {"X-Forwarded-For": chain} if chain is not None else {}
    return client_ip(rf.get("/", headers=headers, REMOTE_ADDR=remote))


def test_the_client_address_ignores_the_header_without_proxy_networks(rf, settings):
    settings.TRUSTED_PROXY_NETWORKS = []
    settings.TRUSTED_PROXIES = 2
    assert client_ip_of(rf, "10.0.0.1", "6.6.6.6, 1.2.3.4") == "10.0.0.1"


def test_the_chain_is_read_from_the_right_past_the_trusted_proxies(rf, settings):
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8", "2001:db8:ffff::/48"]
    settings.TRUSTED_PROXIES = 0
    chain = "6.6.6.6, 203.0.113.7, 10.0.0.3, 2001:db8:ffff::1"
    assert client_ip_of(rf, "10.0.0.2", chain) == "203.0.113.7"
    # A proxy that sent no chain is the client itself (its own health check, say).
    assert client_ip_of(rf, "10.0.0.2") == "10.0.0.2"
    # A peer written as IPv4 inside IPv6 (a dual-stack listener) is still that proxy.
    assert client_ip_of(rf, "::ffff:10.0.0.2", "203.0.113.7") == "203.0.113.7"


def test_the_proxy_count_stops_the_walk_when_the_networks_cover_everyone(rf, settings):
    # A platform whose edge proxy is the only way in: any peer is the proxy, and the
    # client is the address that one proxy appended, whatever the client wrote before it.
    settings.TRUSTED_PROXY_NETWORKS = ["0.0.0.0/0", "::/0"]
    settings.TRUSTED_PROXIES = 1
    assert client_ip_of(rf, "100.64.0.9", "6.6.6.6, 203.0.113.7") == "203.0.113.7"
    settings.TRUSTED_PROXIES = 2
    assert client_ip_of(rf, "100.64.0.9", "6.6.6.6, 203.0.113.7, 10.0.0.3") == "203.0.113.7"
    assert client_ip_of(rf, "100.64.0.9", "203.0.113.7") == "203.0.113.7"


def test_a_malformed_hop_ends_the_walk_at_the_nearest_readable_address(rf, settings):
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    settings.TRUSTED_PROXIES = 0
    assert client_ip_of(rf, "10.0.0.2", "203.0.113.7, garbage, 10.0.0.3") == "10.0.0.3"
    assert client_ip_of(rf, "10.0.0.2", "garbage") == "10.0.0.2"
    assert client_ip_of(rf, "10.0.0.2", ", ,") == "10.0.0.2"


@pytest.mark.parametrize(
    ("hop", "client"),
    [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:DB8::7", "2001:db8::7"),
    ],
)
def test_a_hop_with_a_port_or_brackets_is_read_as_its_address(rf, settings, hop, client):
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    assert client_ip_of(rf, "10.0.0.2", hop) == client


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


# --- Every per-client limit counts the same client ----------------------------------------


def test_wrong_health_tokens_from_one_ipv6_64_share_one_budget(client, settings):
    settings.HEALTH_TOKEN = "t" * 32
    settings.HEALTH_TOKEN_TRIES_PER_MINUTE = 2
    codes = [
        client.get(
            "/api/health/ready/",
            headers={"X-Health-Token": "guess"},
            REMOTE_ADDR=f"2001:db8:7:7::{n:x}",
        ).status_code
        for n in range(1, 5)
    ]
    assert codes == [403, 403, 429, 429]
