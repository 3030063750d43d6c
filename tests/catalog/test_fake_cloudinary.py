"""The fake Cloudinary server, driven by the real cloudinary SDK over HTTP: no mocks.

Besides checking the fake, these pin down what publishing code can rely on from
cloudinary 1.46.3: which exception each failure raises, that only a per-call `timeout=`
bounds an upload, and that the SDK sends an upload once, whatever happens to it.
"""

from __future__ import annotations

import base64
import hashlib
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


def fetch(url: str, accept: str = "*/*") -> httpx.Response:
    return httpx.get(url, headers={"Accept": accept}, timeout=5, trust_env=False)


def image_of(response: httpx.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


# -- uploads -------------------------------------------------------------------------------


def test_publishing_the_same_public_id_three_times_leaves_one_asset(fake):
    answers = [
        cloudinary.uploader.upload(jpeg(), public_id="cat-1", folder="catalog", overwrite=True)
        for _ in range(3)
    ]

    assert [answer["public_id"] for answer in answers] == ["catalog/cat-1"] * 3
    assert list(fake.assets) == ["catalog/cat-1"]
    assert fake.upload_counts == {"catalog/cat-1": 3}
    assert [answer.get("overwritten", False) for answer in answers] == [False, True, True]
    versions = [answer["version"] for answer in answers]
    assert versions == sorted(set(versions))  # each upload is a new version


def test_the_upload_answer_describes_the_stored_image(fake):
    data = jpeg(400, 300)

    answer = cloudinary.uploader.upload(data, public_id="cat-2", folder="catalog")

    assert answer["public_id"] == "catalog/cat-2"
    assert (answer["width"], answer["height"], answer["format"]) == (400, 300, "jpg")
    assert (answer["resource_type"], answer["type"], answer["bytes"]) == (
        "image",
        "upload",
        len(data),
    )
    assert answer["etag"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert answer["url"].startswith(f"{fake.url}/demo/image/upload/v{answer['version']}/")
    assert cloudinary.utils.verify_api_response_signature(
        answer["public_id"], answer["version"], answer["signature"]
    )
    stored = fake.assets["catalog/cat-2"]
    assert (stored.data, stored.width, stored.height) == (data, 400, 300)


def test_a_data_uri_is_stored_like_the_bytes_it_encodes(fake):
    data = jpeg()

    cloudinary.uploader.upload(
        f"data:image/jpeg;base64,{base64.b64encode(data).decode()}", public_id="uri"
    )

    assert fake.assets["uri"].data == data


def test_without_overwrite_an_existing_asset_is_kept(fake):
    first = cloudinary.uploader.upload(jpeg(400, 300), public_id="keep")

    second = cloudinary.uploader.upload(jpeg(50, 50), public_id="keep", overwrite=False)

    assert second["existing"] is True
    assert second["version"] == first["version"]
    assert fake.assets["keep"].width == 400


def test_a_file_that_is_not_an_image_is_a_bad_request(fake):
    with pytest.raises(BadRequest, match="Invalid image file"):
        cloudinary.uploader.upload(b"%PDF-1.7 not an image", public_id="doc")

    assert fake.assets == {}


def test_a_wrong_api_secret_is_refused(fake):
    with pytest.raises(AuthorizationRequired, match="Invalid Signature"):
        cloudinary.uploader.upload(jpeg(), public_id="cat-3", api_secret="not-the-secret")

    assert fake.assets == {}


# -- delivery ------------------------------------------------------------------------------


def test_the_returned_urls_serve_the_uploaded_bytes():
    data = jpeg()
    answer = cloudinary.uploader.upload(data, public_id="cat-4", folder="catalog")

    for url in (
        answer["url"],
        answer["secure_url"],
        cloudinary.CloudinaryImage("catalog/cat-4").build_url(),
    ):
        response = fetch(url)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.content == data


def test_a_fill_thumbnail_url_returns_an_image_of_that_size():
    cloudinary.uploader.upload(jpeg(400, 300), public_id="cat-5", folder="catalog")

    url, _ = cloudinary.utils.cloudinary_url(
        "catalog/cat-5", width=320, height=320, crop="fill", fetch_format="auto", quality="auto"
    )
    plain, webp = fetch(url), fetch(url, accept="image/avif,image/webp,*/*")

    assert "/c_fill,f_auto,h_320,q_auto,w_320/v1/catalog/cat-5" in url
    assert plain.headers["Content-Type"] == "image/jpeg"
    assert image_of(plain).size == (320, 320)
    assert webp.headers["Content-Type"] == "image/webp"
    assert (image_of(webp).format, image_of(webp).size) == ("WEBP", (320, 320))


def test_a_limit_crop_keeps_the_aspect_ratio_and_never_enlarges():
    cloudinary.uploader.upload(jpeg(400, 300), public_id="cat-6")
    image = cloudinary.CloudinaryImage("cat-6")

    shrunk = fetch(image.build_url(width=100, crop="limit", format="png"))
    kept = fetch(image.build_url(width=800, height=800, crop="limit"))

    assert shrunk.headers["Content-Type"] == "image/png"
    assert image_of(shrunk).size == (100, 75)
    assert image_of(kept).size == (400, 300)


def test_destroy_removes_the_asset_and_its_urls(fake):
    answer = cloudinary.uploader.upload(jpeg(), public_id="cat-7", folder="catalog")

    assert cloudinary.uploader.destroy("catalog/cat-7")["result"] == "ok"

    assert fake.assets == {}
    gone = fetch(answer["secure_url"])
    assert gone.status_code == 404
    assert "catalog/cat-7" in gone.headers["X-Cld-Error"]
    assert cloudinary.uploader.destroy("catalog/cat-7")["result"] == "not found"


# -- failures and what the SDK does with them ----------------------------------------------


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
        cloudinary.uploader.upload(jpeg(), public_id="cat-8")

    assert type(failed.value) is raised
    assert [request.status for request in fake.requests] == [status]
    assert fake.assets == {}


def test_a_proxy_page_instead_of_json_raises_the_base_error(fake):
    fake.fail_next(1, status=502, body=b"<html>502 Bad Gateway</html>")

    with pytest.raises(Error, match=r"Error parsing server response \(502\)") as failed:
        cloudinary.uploader.upload(jpeg(), public_id="cat-9")

    assert type(failed.value) is Error


def test_a_delay_beyond_the_timeout_raises_yet_the_upload_lands_once(fake):
    fake.delay_next(1, seconds=0.3, path_contains="/image/upload")

    with pytest.raises(Error, match="Read timed out") as failed:
        cloudinary.uploader.upload(jpeg(), public_id="cat-10", timeout=0.1)

    assert type(failed.value) is Error
    deadline = time.monotonic() + 2
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(request.public_id, request.status) for request in fake.requests] == [("cat-10", 200)]
    assert fake.upload_counts == {"cat-10": 1}


def test_the_config_timeout_does_not_bound_uploads(fake):
    cloudinary.config(timeout=0.05)  # read by the Admin API only
    fake.delay_next(1, seconds=0.25)

    answer = cloudinary.uploader.upload(jpeg(), public_id="cat-11")

    assert answer["public_id"] == "cat-11"


def test_a_refused_connection_raises_the_base_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    cloudinary.config(upload_prefix=f"http://127.0.0.1:{free_port}")

    with pytest.raises(Error, match="Connection refused") as failed:
        cloudinary.uploader.upload(jpeg(), public_id="cat-12")

    assert type(failed.value) is Error
