"""POST /api/search/ with {"url": ...}: the server fetches the picture, and refuses to fetch
anything that is not on the public internet.

Pictures come from a real server on 127.0.0.1, reachable only with the test-only
URL_FETCH_ALLOW_LOOPBACK; with it off, every form of a loopback or private address is
refused before a connection is made (the `connections` tripwire records any attempt).
"""

import socket
import threading
import time

import pytest

from search import fetching

pytestmark = pytest.mark.django_db
SEARCH = "/api/search/"
PUBLIC = "93.184.216.34"  # a global address; nothing is ever sent to it


@pytest.fixture(autouse=True)
def quick_fetches(settings):
    settings.URL_FETCH_TIMEOUT_SECONDS = 0.5
    settings.URL_FETCH_DEADLINE_SECONDS = 2.0


@pytest.fixture
def connections(monkeypatch, picture_server):
    """Every address the process tries to connect to; only the picture server answers."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        attempts.append(address[:2])
        if address[:2] != ("127.0.0.1", picture_server.port):
            raise ConnectionRefusedError(f"the test refuses connections to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


class ScriptedResolver:
    """Answers a name with the next of its scripted answers (the last one from then on),
    as a DNS server under an attacker's control could; other names resolve for real."""

    def __init__(self, scripts: dict[str, list[list[str]]]) -> None:
        self.scripts = scripts
        self.asked: list[str] = []
        self._real = fetching.resolve_host

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.scripts:
            return self._real(host, port)
        answers = self.scripts[host]
        self.asked.append(host)
        return answers[min(self.asked.count(host), len(answers)) - 1]


@pytest.fixture
def resolver(monkeypatch):
    def install(scripts: dict[str, list[list[str]]]) -> ScriptedResolver:
        scripted = ScriptedResolver(scripts)
        monkeypatch.setattr(fetching, "resolve_host", scripted)
        return scripted

    return install


def search(client, **body):
    return client.post(SEARCH, body, content_type="application/json")


def error_of(response, status=400) -> str:
    assert response.status_code == status, response.content
    assert response.json()["detail"]
    return response.json()["error"]


def test_a_url_search_finds_the_catalog_picture(client, catalog, pictures, loopback_allowed):
    response = search(client, url=pictures.url("/picture.jpg"), top_k=3)
    assert response.status_code == 200, response.content
    first = response.json()["results"][0]
    assert first["id"] == catalog["coffee.png"].pk
    assert first["similarity"] >= 99.0
    assert pictures.requests == [("/picture.jpg", f"127.0.0.1:{pictures.port}")]


def test_a_multipart_url_field_works_like_json(client, catalog, pictures, loopback_allowed):
    response = client.post(SEARCH, {"url": pictures.url("/picture.jpg"), "top_k": "1"})
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["id"] == catalog["coffee.png"].pk


@pytest.mark.parametrize(
    "other", [{"image": "aGVsbG8="}, {"image_id": 1}], ids=["image", "image_id"]
)
def test_a_url_with_another_query_is_ambiguous(client, pictures, other):
    response = search(client, url=pictures.url("/picture.jpg"), **other)
    assert error_of(response) == "ambiguous_query"
    assert pictures.requests == []


def test_url_search_can_be_turned_off(client, settings, pictures, loopback_allowed):
    settings.SEARCH_BY_URL = False
    assert error_of(search(client, url=pictures.url("/picture.jpg")), 403) == "url_search_disabled"
    assert pictures.requests == []


def test_up_to_three_redirects_are_followed(client, catalog, pictures, loopback_allowed):
    response = search(client, url=pictures.url("/hops/2"))  # 2 hops, then /picture.jpg
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["id"] == catalog["coffee.png"].pk
    assert [path for path, _ in pictures.requests] == [
        "/hops/2",
        "/hops/1",
        "/hops/0",
        "/picture.jpg",
    ]


def test_a_fourth_redirect_is_refused(client, pictures, loopback_allowed):
    response = search(client, url=pictures.url("/hops/3"))
    assert error_of(response) == "url_fetch_failed"
    assert "redirected more than 3 times" in response.json()["detail"]
    assert len(pictures.requests) == 4  # the fourth redirect is never followed


def test_a_404_is_a_failed_fetch(client, pictures, loopback_allowed):
    response = search(client, url=pictures.url("/missing.jpg"))
    assert error_of(response) == "url_fetch_failed"
    assert "404" in response.json()["detail"]


def test_a_host_that_does_not_resolve_is_a_failed_fetch(client):
    assert error_of(search(client, url="http://no-such-host.invalid/a.jpg")) == "url_fetch_failed"


def test_a_server_that_does_not_answer_times_out(client, pictures, loopback_allowed):
    started = time.monotonic()
    assert error_of(search(client, url=pictures.url("/slow"))) == "url_fetch_failed"
    assert time.monotonic() - started < 1.5  # the 0.5 s read timeout, not the 3 s server


def test_a_server_that_drips_bytes_is_cut_off_at_the_deadline(client, pictures, loopback_allowed):
    started = time.monotonic()
    response = search(client, url=pictures.url("/drip"))  # each byte well within 0.5 s
    assert error_of(response) == "url_fetch_failed"
    assert 1.9 < time.monotonic() - started < 3.5  # the 2 s deadline


def test_a_declared_huge_body_is_refused_before_it_is_read(client, pictures, loopback_allowed):
    assert error_of(search(client, url=pictures.url("/declared-huge"))) == "image_too_large"


def test_an_endless_body_is_cut_at_the_byte_limit(client, settings, pictures, loopback_allowed):
    settings.IMAGE_MAX_BYTES = 1_000_000
    assert error_of(search(client, url=pictures.url("/endless"))) == "image_too_large"


REFUSED_WITHOUT_THE_ALLOWANCE = [
    "http://127.0.0.1:{port}/picture.jpg",
    "http://127.9.9.9:{port}/picture.jpg",
    "http://localhost:{port}/picture.jpg",
    "http://LOCALHOST.:{port}/picture.jpg",
    "http://[::1]:{port}/picture.jpg",
    "http://[::ffff:127.0.0.1]:{port}/picture.jpg",
    "http://[::ffff:7f00:1]:{port}/picture.jpg",
    "http://2130706433:{port}/picture.jpg",  # 127.0.0.1 as one decimal number
    "http://0x7f000001:{port}/picture.jpg",
    "http://127.1:{port}/picture.jpg",
    "http://0.0.0.0:{port}/picture.jpg",  # reaches this machine on Linux
    "http://0:{port}/picture.jpg",
    "http://[::]:{port}/picture.jpg",
    "http://10.0.0.1/picture.jpg",
    "http://172.16.5.4/picture.jpg",
    "http://192.168.1.1/picture.jpg",
    "http://100.64.0.1/picture.jpg",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/picture.jpg",
    "http://[fd00::1]/picture.jpg",
    "http://[fec0::1]/picture.jpg",
    "http://224.0.0.1/picture.jpg",
    "http://[ff02::1]/picture.jpg",
    "http://240.0.0.1/picture.jpg",
    "http://255.255.255.255/picture.jpg",
    "http://198.18.0.1/picture.jpg",
    "http://[::ffff:10.0.0.1]/picture.jpg",
    "http://[64:ff9b::a9fe:a9fe]/picture.jpg",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/picture.jpg",  # 6to4 of 127.0.0.1
    "http://[2001:db8::1]/picture.jpg",  # documentation
]


@pytest.mark.parametrize("url", REFUSED_WITHOUT_THE_ALLOWANCE)
def test_loopback_and_private_addresses_are_refused_before_connecting(
    client, pictures, connections, url
):
    assert error_of(search(client, url=url.format(port=pictures.port))) == "url_not_allowed"
    assert connections == []
    assert pictures.requests == []


def test_the_allowance_covers_loopback_only(client, pictures, connections, loopback_allowed):
    for url in ["http://10.0.0.1/", "http://169.254.169.254/", "http://[fd00::1]/"]:
        assert error_of(search(client, url=url)) == "url_not_allowed"
    assert connections == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/picture.jpg",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "data:image/jpeg;base64,/9j/4AAQ",
        "127.0.0.1:{port}/picture.jpg",
        "//127.0.0.1:{port}/picture.jpg",
        "http://user:secret@127.0.0.1:{port}/picture.jpg",
        "http://user@127.0.0.1:{port}/picture.jpg",
        "http://127.0.0.1:0/picture.jpg",
        "http://127.0.0.1:99999/picture.jpg",
        "http:///picture.jpg",
        "http://bad host/picture.jpg",
        "http://[fe80::1%25eth0]/picture.jpg",
        "",
        "http://127.0.0.1/" + "a" * 2048,
    ],
)
def test_urls_that_are_not_plain_http_are_refused(
    client, pictures, connections, url, loopback_allowed
):
    assert error_of(search(client, url=url.format(port=pictures.port))) == "url_not_allowed"
    assert connections == []


def test_a_url_that_is_not_a_string_is_refused(client):
    assert error_of(search(client, url=["http://example.com/"])) == "url_not_allowed"


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/picture.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:192.168.0.1]/",
        "http://inside.example/picture.jpg",  # a name that resolves inside
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/picture.jpg",
    ],
)
def test_a_redirect_to_a_refused_url_is_refused(
    client, pictures, connections, resolver, loopback_allowed, location
):
    resolver({"inside.example": [["10.1.2.3"]]})
    response = search(client, url=pictures.url(f"/to?location={location}"))
    assert error_of(response) == "url_not_allowed"
    assert len(pictures.requests) == 1
    assert set(connections) == {("127.0.0.1", pictures.port)}


def test_a_name_with_one_refused_address_among_public_ones_is_refused(
    client, connections, resolver
):
    resolver({"pictures.example": [[PUBLIC, "127.0.0.1"]]})
    assert error_of(search(client, url="http://pictures.example/a.jpg")) == "url_not_allowed"
    assert connections == []


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(
    client, catalog, pictures, connections, resolver, loopback_allowed
):
    # DNS rebinding: the first answer passes the check, a later one would reach inside.
    dns = resolver({"pictures.example": [["127.0.0.1"], ["10.0.0.1"]]})
    response = search(client, url=pictures.url("/picture.jpg", host="pictures.example"))
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["id"] == catalog["coffee.png"].pk
    assert dns.asked == ["pictures.example"]
    assert connections == [("127.0.0.1", pictures.port)]
    # The server is asked for the name, as virtual hosting needs.
    assert pictures.requests == [("/picture.jpg", f"pictures.example:{pictures.port}")]


def test_a_public_first_answer_is_the_only_address_tried(client, connections, resolver):
    dns = resolver({"pictures.example": [[PUBLIC], ["127.0.0.1"]]})
    assert error_of(search(client, url="http://pictures.example/a.jpg")) == "url_fetch_failed"
    assert dns.asked == ["pictures.example"]
    assert connections == [(PUBLIC, 80)]


def test_each_redirect_is_resolved_and_checked_again(
    client, pictures, connections, resolver, loopback_allowed
):
    dns = resolver({"pictures.example": [["127.0.0.1"], ["10.0.0.1"]]})
    # The same name again on the second hop: its new answer is checked, not the first one.
    again = pictures.url("/picture.jpg", host="pictures.example")
    response = search(client, url=pictures.url(f"/to?location={again}", host="pictures.example"))
    assert error_of(response) == "url_not_allowed"
    assert dns.asked == ["pictures.example", "pictures.example"]
    assert len(pictures.requests) == 1


def test_a_url_on_a_port_that_is_not_allowed_is_refused_before_connecting(
    client, settings, pictures, connections, loopback_allowed
):
    settings.URL_FETCH_PORTS = (80, 443)
    response = search(client, url=pictures.url("/picture.jpg"))
    assert error_of(response) == "url_not_allowed"
    assert f"port {pictures.port}" in response.json()["detail"]
    assert connections == []


def test_a_redirect_to_a_port_that_is_not_allowed_is_refused(
    client, settings, pictures, connections, loopback_allowed
):
    settings.URL_FETCH_PORTS = (80, 443, pictures.port)
    response = search(client, url=pictures.url("/to?location=http://127.0.0.1:8080/x.jpg"))
    assert error_of(response) == "url_not_allowed"
    assert connections == [("127.0.0.1", pictures.port)]


@pytest.fixture
def one_fetch_in_flight(settings, pictures, loopback_allowed):
    """URL_FETCH_MAX_IN_FLIGHT=1, and a fetch of the dripping /drip holding that one slot
    (until the 2 s deadline); yields once the picture server has the request."""
    settings.URL_FETCH_MAX_IN_FLIGHT = 1
    outcome = []

    def fetch():
        try:
            fetching.fetch_query_image(pictures.url("/drip"))
        except Exception as exc:  # the test looks at it
            outcome.append(exc)

    holder = threading.Thread(target=fetch)
    holder.start()
    waited = time.monotonic() + 5
    while not pictures.requests and time.monotonic() < waited:
        time.sleep(0.01)
    yield holder
    holder.join(10)
    assert outcome and outcome[0].code == "url_fetch_failed"  # cut at its deadline


def test_a_url_search_beyond_the_fetches_in_flight_is_refused_at_once(
    client, pictures, one_fetch_in_flight
):
    started = time.monotonic()
    response = search(client, url=pictures.url("/picture.jpg"))
    assert error_of(response, 503) == "url_fetch_busy"
    assert time.monotonic() - started < 1  # refused, not queued
    assert response["Retry-After"] == "2"  # the deadline: a slot frees within it
    assert [path for path, _ in pictures.requests] == ["/drip"]


def test_searches_by_picture_still_run_while_every_fetch_slot_is_taken(
    client, catalog, one_fetch_in_flight
):
    response = search(client, image_id=catalog["coffee.png"].pk)
    assert response.status_code == 200, response.content


def test_a_fetch_slot_frees_when_its_fetch_ends(client, catalog, pictures, one_fetch_in_flight):
    one_fetch_in_flight.join(10)
    response = search(client, url=pictures.url("/picture.jpg"))
    assert response.status_code == 200, response.content


def test_a_refused_url_takes_no_fetch_slot(client, pictures, one_fetch_in_flight):
    assert error_of(search(client, url="ftp://example.com/a.jpg")) == "url_not_allowed"
