"""The fake Cloudinary answers the app's calls as Cloudinary does and refuses the rest.

Driven through the real `cloudinary` SDK with the options catalog/hosting/cloudinary.py
passes; the failure tests pin what the SDK raises, which the image host relies on.
"""

from __future__ import annotations

import base64
import io
import socket
import time

import cloudinary
import cloudinary.uploader
import cloudinary.utils
import httpx
import pytest
from cloudinary.exceptions import (
    AuthorizationRequired,
    BadRequest,
    Error,
    GeneralError,
    RateLimited,
)
from PIL import Image

from tests.fakes.cloudinary_server import FakeCloudinary


@pytest.fixture(autouse=True)
def fake(cloudinary_fake: FakeCloudinary) -> FakeCloudinary:
    return cloudinary_fake


def jpeg(width: int = 400, height: int = 300) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def upload(data: bytes, public_id: str = "catalog/catalog-1", **options) -> dict:
    """An upload as the image host sends it."""
    options = {"overwrite": True, "invalidate": True, "resource_type": "image", **options}
    return cloudinary.uploader.upload(data, public_id=public_id, **options)


def fetch(url: str, accept: str = "*/*") -> httpx.Response:
    return httpx.get(url, headers={"Accept": accept}, timeout=5, trust_env=False)


def image_of(response: httpx.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def test_publishing_the_same_public_id_three_times_leaves_one_asset(fake):
    data = jpeg(400, 300)

    answers = [upload(data) for _ in range(3)]

    assert list(fake.assets) == ["catalog/catalog-1"]
    assert fake.upload_counts == {"catalog/catalog-1": 3}
    assert [answer.get("overwritten", False) for answer in answers] == [False, True, True]
    versions = [answer["version"] for answer in answers]
    assert versions == sorted(set(versions))  # each upload is a new version
    last = answers[-1]
    assert (last["width"], last["height"], last["format"]) == (400, 300, "jpg")
    assert (last["public_id"], last["bytes"]) == ("catalog/catalog-1", len(data))
    assert last["secure_url"].startswith(f"{fake.url}/demo/image/upload/v{last['version']}/")


def test_a_file_that_is_not_an_image_is_a_bad_request(fake):
    with pytest.raises(BadRequest, match="Invalid image file"):
        upload(b"%PDF-1.7 not an image")

    assert fake.assets == {}


def test_a_wrong_api_secret_is_refused(fake):
    with pytest.raises(AuthorizationRequired, match="Invalid Signature"):
        upload(jpeg(), api_secret="not-the-secret")

    assert fake.assets == {}


def test_the_returned_url_and_the_built_url_serve_the_uploaded_bytes():
    data = jpeg()
    answer = upload(data)

    for url in (answer["secure_url"], cloudinary.utils.cloudinary_url("catalog/catalog-1")[0]):
        response = fetch(url)
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.content == data


def test_the_thumbnail_url_fills_the_size_and_gives_webp_to_who_accepts_it():
    upload(jpeg(400, 300))

    url, _ = cloudinary.utils.cloudinary_url(
        "catalog/catalog-1", width=320, height=320, crop="fill", fetch_format="auto", quality="auto"
    )
    plain, webp = fetch(url), fetch(url, accept="image/avif,image/webp,*/*")

    assert (image_of(plain).format, image_of(plain).size) == ("JPEG", (320, 320))
    assert (image_of(webp).format, image_of(webp).size) == ("WEBP", (320, 320))


def test_destroy_removes_the_asset_and_its_urls(fake):
    answer = upload(jpeg())

    assert cloudinary.uploader.destroy("catalog/catalog-1", invalidate=True)["result"] == "ok"

    assert fake.assets == {}
    gone = fetch(answer["secure_url"])
    assert gone.status_code == 404 and "catalog/catalog-1" in gone.headers["X-Cld-Error"]
    assert cloudinary.uploader.destroy("catalog/catalog-1")["result"] == "not found"


@pytest.mark.parametrize(
    "attempt",
    [
        lambda: upload(jpeg(), folder="elsewhere"),
        lambda: upload(jpeg(), overwrite=False),
        lambda: upload(f"data:image/jpeg;base64,{base64.b64encode(jpeg()).decode()}"),
        lambda: cloudinary.uploader.upload(jpeg(), public_id="x", resource_type="raw"),
    ],
    ids=["another option", "overwrite=false", "a data URI", "a raw asset"],
)
def test_uploads_the_app_never_sends_are_refused_as_not_emulated(fake, attempt):
    with pytest.raises(Error, match="does not emulate"):
        attempt()

    assert fake.assets == {}


def test_transformations_the_app_never_asks_for_are_refused_as_not_emulated():
    upload(jpeg())
    url, _ = cloudinary.utils.cloudinary_url("catalog/catalog-1", width=100, crop="limit")

    refused = fetch(url)

    assert refused.status_code == 501 and "does not emulate" in refused.headers["X-Cld-Error"]


@pytest.mark.parametrize(
    ("status", "raised"),
    [
        (500, GeneralError),
        (503, GeneralError),
        (420, RateLimited),
        (429, RateLimited),
        (502, Error),
    ],
)
def test_an_injected_failure_raises_by_status_and_is_not_retried(fake, status, raised):
    fake.fail_next(1, status=status, path_contains="/image/upload", retry_after=0)

    with pytest.raises(Error) as failed:
        upload(jpeg())

    assert type(failed.value) is raised
    assert [request.status for request in fake.requests] == [status]
    assert fake.assets == {}


def test_a_proxy_page_instead_of_json_raises_the_base_error(fake):
    fake.fail_next(1, status=502, body=b"<html>502 Bad Gateway</html>")

    with pytest.raises(Error, match=r"Error parsing server response \(502\)") as failed:
        upload(jpeg())

    assert type(failed.value) is Error


def test_a_delay_beyond_the_timeout_raises_yet_the_upload_lands_once(fake):
    fake.delay_next(1, seconds=0.3, path_contains="/image/upload")

    with pytest.raises(Error, match="Read timed out") as failed:
        upload(jpeg(), timeout=0.1)

    assert type(failed.value) is Error
    deadline = time.monotonic() + 2
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.upload_counts == {"catalog/catalog-1": 1}


def test_the_config_timeout_does_not_bound_uploads(fake):
    cloudinary.config(timeout=0.05)  # read by the Admin API only
    fake.delay_next(1, seconds=0.25)

    assert upload(jpeg())["public_id"] == "catalog/catalog-1"


def test_a_refused_connection_raises_the_base_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    cloudinary.config(upload_prefix=f"http://127.0.0.1:{free_port}")

    with pytest.raises(Error, match="Connection refused") as failed:
        upload(jpeg())

    assert type(failed.value) is Error
