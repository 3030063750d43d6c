"""search.fetching on its own: which addresses are public, and https to a checked address.

The API-level refusals (every loopback and private form, redirects, timeouts, limits) are in
test_url_search.py; these are the parts the API cannot reach: https needs a certificate the
test trusts, which only a FetchPolicy can carry.
"""

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from search import fetching
from search.imaging import ImageRejected
from tests.conftest import photo_bytes
from tests.fakes.picture_server import PictureServer

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
    defaults = {"timeout": 1.0, "deadline": 3.0, "max_bytes": 10_000_000, "allow_loopback": True}
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
    assert refused.value.code == "url_fetch_failed"
    assert "certificate" in refused.value.detail
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
