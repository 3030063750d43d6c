"""search.fetching on its own: which addresses are public, https to a checked address, and
a deadline no server can stretch.

The API-level refusals (every loopback and private form, redirects, timeouts, limits) are in
test_url_search.py; these are the parts the API cannot reach: https needs a certificate the
test trusts, which only a FetchPolicy can carry, and each slow step of a fetch is tried
against a real server on 127.0.0.1 (tests/fakes/slow_server.py).
"""

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.picture_server import PictureServer as FeedPictureServer
from search import fetching
from search.imaging import ImageRejected
from tests.conftest import photo_bytes
from tests.fakes.picture_server import PictureServer
from tests.fakes.slow_server import SlowServer
from tests.project_process import project_env, run_python

PICTURE = photo_bytes("coffee.png")


@pytest.mark.parametrize(
    ("address", "connect_to"),
    [
        ("93.184.216.34", "93.184.216.34"),
        ("2606:4700::1111", "2606:4700::1111"),
        ("::ffff:8.8.8.8", "8.8.8.8"),  # IPv4-mapped: connect over IPv4
        ("64:ff9b::808:808", "64:ff9b::808:808"),  # NAT64 of a public address
        ("2002:808:808::1", "2002:808:808::1"),  # 6to4 of a public address
    ],
)
def test_public_addresses_are_allowed(address, connect_to):
    allowed = fetching.address_to_connect(ipaddress.ip_address(address))
    assert allowed == ipaddress.ip_address(connect_to)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254", "fe80::1"],
)
def test_the_loopback_allowance_lets_loopback_through_and_nothing_else(address):
    parsed = ipaddress.ip_address(address)
    assert fetching.address_to_connect(parsed) is None
    allowed = fetching.address_to_connect(parsed, allow_loopback=True)
    assert (allowed is not None) == (address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"))


def self_signed(tmp_path, hostname: str) -> tuple:
    """A certificate for `hostname` and its key, as files, and a context that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return (cert_file, key_file), ssl.create_default_context(cafile=str(cert_file))


def policy(**options) -> fetching.FetchPolicy:
    defaults = {
        "timeout": 1.0,
        "deadline": 3.0,
        "max_bytes": 10_000_000,
        "allow_loopback": True,
        "ports": None,  # the test servers listen on ports the system picks
    }
    return fetching.FetchPolicy(**{**defaults, **options})


@pytest.fixture
def pictures_example_is_loopback(monkeypatch):
    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(fetching, "resolve_host", resolve)
    return asked


def test_https_goes_to_the_checked_address_and_verifies_the_name(
    tmp_path, pictures_example_is_loopback
):
    tls, trusted = self_signed(tmp_path, "pictures.example")
    with PictureServer(PICTURE, tls=tls) as server:
        url = server.url("/picture.jpg", host="pictures.example")
        assert fetching.fetch_image(url, policy=policy(ssl_context=trusted)) == PICTURE
    # The name went out as SNI and was checked against the certificate: connecting to
    # 127.0.0.1 did not turn it into a check against the address.
    assert server.sni_names == ["pictures.example"]
    assert server.requests == [("/picture.jpg", f"pictures.example:{server.port}")]
    assert pictures_example_is_loopback == ["pictures.example"]


def test_https_refuses_a_certificate_for_another_name(tmp_path, pictures_example_is_loopback):
    tls, trusted = self_signed(tmp_path, "other.example")
    with PictureServer(PICTURE, tls=tls) as server:
        url = server.url("/picture.jpg", host="pictures.example")
        with pytest.raises(ImageRejected) as refused:
            fetching.fetch_image(url, policy=policy(ssl_context=trusted))
    # Refused like any connection that fails: the detail does not say which failure it was.
    assert refused.value.detail == fetching.fetch_failed(fetching.UNREACHABLE).detail
    assert server.requests == []


def test_https_checks_certificates_against_the_system_store_by_default(
    tmp_path, pictures_example_is_loopback
):
    tls, _ = self_signed(tmp_path, "pictures.example")
    with PictureServer(PICTURE, tls=tls) as server:
        url = server.url("/picture.jpg", host="pictures.example")
        with pytest.raises(ImageRejected) as refused:
            fetching.fetch_image(url, policy=policy())
    assert refused.value.code == "url_fetch_failed"


def test_a_path_with_spaces_and_non_ascii_is_sent_percent_encoded():
    target = fetching.parse_url("https://Bücher.example/a b/ü.jpg?q=x y#frag")
    assert target.host == "xn--bcher-kva.example"
    assert target.path == "/a%20b/%C3%BC.jpg?q=x%20y"
    assert target.host_header == "xn--bcher-kva.example"
    assert fetching.parse_url("http://[2606:4700::1111]:8080/").host_header == (
        "[2606:4700::1111]:8080"
    )


def test_a_conditional_fetch_of_a_current_copy_gets_no_body():
    with FeedPictureServer({"/p.jpg": PICTURE}) as server:
        first = fetching.fetch_if_changed(server.url("/p.jpg"), policy=policy())
        assert first.data == PICTURE and first.etag and first.last_modified
        again = fetching.fetch_if_changed(server.url("/p.jpg"), policy=policy(), etag=first.etag)
        other = fetching.fetch_if_changed(server.url("/p.jpg"), policy=policy(), etag='"x"')
        assert server.statuses == [200, 304, 200]
    assert (again.data, again.etag) == (None, first.etag)  # 304: nothing downloaded
    assert other.data == PICTURE


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("192.168.1.20", True),
        ("fd00::5", True),
        ("::ffff:192.168.1.20", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),  # the cloud metadata service
        ("fe80::1", False),
        ("100.64.0.1", False),  # carrier-grade NAT: not the site's own network
        ("0.0.0.0", False),
    ],
)
def test_the_private_network_allowance_of_feeds_opens_site_networks_only(address, allowed):
    parsed = ipaddress.ip_address(address)
    assert fetching.address_to_connect(parsed) is None
    assert (fetching.address_to_connect(parsed, allow_private=True) is not None) == allowed


# --- A hard deadline ------------------------------------------------------------------
# Each byte of these servers comes well within the 5 s read timeout: only the deadline ends
# the fetch. The margin is for a busy machine, not for the fetch.
DEADLINE = 1.5
MARGIN = 1.5


def slow_policy(**options) -> fetching.FetchPolicy:
    return policy(timeout=5.0, deadline=DEADLINE, **options)


@pytest.fixture(scope="module")
def slow_server():
    with SlowServer() as server:
        yield server


def fetch_failure(url: str, fetch_policy: fetching.FetchPolicy) -> tuple[ImageRejected, float]:
    """The refusal of fetching `url`, and how long it took to come."""
    started = time.monotonic()
    with pytest.raises(ImageRejected) as refused:
        fetching.fetch_image(url, policy=fetch_policy)
    return refused.value, time.monotonic() - started


@pytest.mark.parametrize(
    "behaviour", ["status-line", "header-lines", "continue", "chunked-size", "body"]
)
def test_a_server_that_answers_slowly_is_cut_off_at_the_deadline(slow_server, behaviour):
    refusal, took = fetch_failure(slow_server.url(behaviour), slow_policy())
    assert refusal.code == "url_fetch_failed"
    assert took < DEADLINE + MARGIN


@pytest.mark.parametrize("behaviour", ["tls-hello", "silent"])
def test_a_tls_handshake_that_never_completes_is_cut_off_at_the_deadline(behaviour):
    with SlowServer(behaviour=behaviour) as server:
        refusal, took = fetch_failure(server.url("x", scheme="https"), slow_policy())
    assert refusal.code == "url_fetch_failed"
    assert took < DEADLINE + MARGIN


def test_the_deadline_closes_the_connection(slow_server):
    before = slow_server.connections
    fetch_failure(slow_server.url("status-line"), slow_policy())
    assert slow_server.connections == before + 1
    waited = time.monotonic() + 5
    while slow_server.open_connections and time.monotonic() < waited:
        time.sleep(0.05)
    assert slow_server.open_connections == 0


@pytest.fixture
def slow_resolver(monkeypatch):
    """Names resolve to 127.0.0.1 after 10 s, as a DNS server that drops queries can make
    getaddrinfo wait; released at the end of the test."""
    released = threading.Event()

    def resolve(host: str, port: int) -> list[str]:
        released.wait(10)
        return ["127.0.0.1"]

    monkeypatch.setattr(fetching, "resolve_host", resolve)
    yield
    released.set()


def test_a_name_that_resolves_slowly_is_given_up_at_the_deadline(slow_resolver):
    refusal, took = fetch_failure("http://slow-dns.example/picture.jpg", slow_policy())
    assert refusal.code == "url_fetch_failed"
    assert "resolve" in refusal.detail
    assert took < DEADLINE + MARGIN


def test_a_slow_name_on_a_redirect_shares_the_first_hops_deadline(slow_resolver):
    with PictureServer(PICTURE) as server:
        to_slow_name = server.url("/to?location=http://slow-dns.example/picture.jpg")
        refusal, took = fetch_failure(to_slow_name, slow_policy())
    assert refusal.code == "url_fetch_failed"
    assert took < DEADLINE + MARGIN


# --- Ports ----------------------------------------------------------------------------


def test_only_ports_80_and_443_are_fetched_by_default(slow_server):
    assert fetching.FetchPolicy(timeout=1, deadline=1, max_bytes=1).ports == {80, 443}
    before = slow_server.connections
    refusal, _ = fetch_failure(slow_server.url("body"), policy(ports=frozenset({80, 443})))
    assert refusal.code == "url_not_allowed"
    assert "port" in refusal.detail
    assert slow_server.connections == before  # refused before any connection


def test_a_redirect_to_a_port_that_is_not_allowed_is_refused():
    with PictureServer(PICTURE) as server, SlowServer() as other:
        url = server.url(f"/to?location={other.url('body')}")
        refusal, _ = fetch_failure(url, policy(ports=frozenset({server.port})))
    assert refusal.code == "url_not_allowed"
    assert other.connections == 0
    assert len(server.requests) == 1


def test_a_port_named_in_the_policy_is_fetched():
    with PictureServer(PICTURE) as server:
        fetched = fetching.fetch_image(
            server.url("/picture.jpg"), policy=policy(ports=frozenset({80, 443, server.port}))
        )
    assert fetched == PICTURE


# --- No port-scan oracle --------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ResettingServer:
    """Accepts, then closes with an RST (SO_LINGER 0) as soon as the request arrives."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            connection.recv(4096)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()


@pytest.fixture
def unreachable_urls(tmp_path):
    """One URL for each way a connection can fail."""
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    queued = []  # connections nobody accepts: the next one waits for a SYN-ACK in vain
    for _ in range(4):
        waiting = socket.socket()
        waiting.setblocking(False)
        waiting.connect_ex(full.getsockname())
        queued.append(waiting)
    resetting = ResettingServer()
    tls, _ = self_signed(tmp_path, "other.example")
    with (
        PictureServer(PICTURE) as plain,
        PictureServer(PICTURE, tls=tls) as wrong_name,
        SlowServer(behaviour="silent") as silent,
    ):
        yield {
            "refused": f"http://127.0.0.1:{closed_port()}/picture.jpg",
            "connect timeout": f"http://127.0.0.1:{full.getsockname()[1]}/picture.jpg",
            "reset": f"http://127.0.0.1:{resetting.port}/picture.jpg",
            "no answer": silent.url("silent"),
            "not tls": plain.url("/picture.jpg").replace("http:", "https:"),
            "certificate for another name": wrong_name.url("/picture.jpg"),
        }
    resetting.close()
    for waiting in queued:
        waiting.close()
    full.close()


def test_every_connection_failure_reads_the_same(unreachable_urls):
    details = {}
    for failure, url in unreachable_urls.items():
        refusal, _ = fetch_failure(url, policy(timeout=0.5, deadline=2.0))
        assert refusal.code == "url_fetch_failed", failure
        details[failure] = refusal.detail
    assert len(set(details.values())) == 1, details


# --- Settings -------------------------------------------------------------------------


def test_the_loopback_allowance_cannot_be_set_from_the_environment(tmp_path):
    env = project_env(tmp_path, URL_FETCH_ALLOW_LOOPBACK="true")
    code = "from django.conf import settings; print(settings.URL_FETCH_ALLOW_LOOPBACK)"
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# Which values env_ports reads or refuses is in tests/visualsearch/test_env.py.
@pytest.mark.parametrize(("variable", "setting"), [(None, "(80, 443)"), ("80,8080", "(80, 8080)")])
def test_the_fetched_ports_come_from_url_fetch_ports(tmp_path, variable, setting):
    env = project_env(tmp_path, **({"URL_FETCH_PORTS": variable} if variable else {}))
    result = run_python("from django.conf import settings; print(settings.URL_FETCH_PORTS)", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == setting


def test_url_fetch_ports_that_are_not_ports_stop_the_start(tmp_path):
    env = project_env(tmp_path, URL_FETCH_PORTS="80;443")
    result = run_python("from django.conf import settings; settings.URL_FETCH_PORTS", env)
    assert result.returncode != 0
    assert "URL_FETCH_PORTS" in result.stderr
