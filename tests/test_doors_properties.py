"""No input shape gives a 5xx from any door: the search API, the no-JS form, the admin's bulk
upload and the import command. Property-based: hypothesis writes the inputs."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import b64, encode, photo

pytestmark = pytest.mark.django_db
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SMALL = photo("coffee.png").resize((48, 32))
REAL_FILES = [
    encode(SMALL, "JPEG"),
    encode(SMALL, "PNG"),
    encode(SMALL, "WEBP"),
    encode(SMALL.convert("P"), "GIF"),
    encode(SMALL, "BMP"),
    encode(SMALL, "TIFF"),
]


@st.composite
def file_bytes(draw) -> bytes:
    """Random bytes, or a real small image cut, spliced or with bytes flipped."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(REAL_FILES)))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


def zip_can_name(name: str) -> bool:
    return bool(name.split("\x00", 1)[0])


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
search_fields = st.fixed_dictionaries(
    {},
    optional={
        "image": json_values | file_bytes().map(b64) | st.text(max_size=200),
        "image_id": json_values,
        "top_k": json_values,
    },
)


@pytest.fixture(scope="module", autouse=True)
def no_rate_limit():
    from django.conf import settings as django_settings

    previous = django_settings.SEARCH_RATE_LIMIT
    django_settings.SEARCH_RATE_LIMIT = ""
    yield
    django_settings.SEARCH_RATE_LIMIT = previous


@pytest.fixture
def one_image():
    image, _ = services.image_create(file=ContentFile(REAL_FILES[0], name="small.jpg"))
    images_index(image_ids=[image.pk])
    return image


def assert_refused_or_served(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400 and response["Content-Type"].startswith("application/json"):
        body = response.json()
        assert body["error"] and body["detail"], body


@PROPERTY
@given(body=json_values | search_fields)
def test_any_json_body_gets_an_answer_or_a_4xx(client, one_image, body):
    response = client.post(
        "/api/search/", json.dumps(body, allow_nan=True), content_type="application/json"
    )
    assert_refused_or_served(response)


@PROPERTY
@given(
    raw=st.binary(max_size=512),
    content_type=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "text/plain",
            "image/png",
            "",
        ]
    ),
)
def test_any_raw_body_gets_an_answer_or_a_4xx(client, raw, content_type):
    assert_refused_or_served(client.post("/api/search/", raw, content_type=content_type))
    assert_refused_or_served(client.post("/", raw, content_type=content_type))


@PROPERTY
@given(data=file_bytes(), name=st.text(max_size=30), top_k=st.text(max_size=5))
def test_any_uploaded_file_gets_an_answer_or_a_4xx_at_both_doors(
    client, one_image, data, name, top_k
):
    fields = {"image": ContentFile(data, name=name or "x"), "top_k": top_k}
    assert_refused_or_served(client.post("/api/search/", fields))
    fields["image"].seek(0)
    assert_refused_or_served(client.post("/", fields))


@PROPERTY
@given(
    files=st.lists(
        st.tuples(st.sampled_from(["a.jpg", "b.png", "c.zip", "d.heic", "e"]), file_bytes()),
        min_size=1,
        max_size=3,
    ),
    # zipfile cuts a member name at its first NUL, and cannot write an empty name.
    members=st.lists(
        st.tuples(st.text(min_size=1, max_size=20).filter(zip_can_name), file_bytes()),
        max_size=3,
    ),
)
def test_any_bulk_upload_gets_a_page_not_a_500(admin_client, files, members):
    """The request only stages the files; the job (run here as its worker would) reads
    every one to the end, whatever they hold, and its page shows how it went."""
    from catalog.models import BulkUploadJob
    from catalog.tasks import run_bulk_upload_job

    uploads = [ContentFile(data, name=name) for name, data in files]
    uploads.append(ContentFile(zip_of(members), name="pictures.zip"))
    response = admin_client.post(
        "/admin/catalog/catalogimage/bulk-upload/", {"files": uploads, "tags": "x"}
    )
    if response.status_code == 200:  # the form refused it (an empty file): said on the page
        assert response.context["form"].errors
        return
    assert response.status_code == 302
    job = BulkUploadJob.objects.latest("pk")
    run_bulk_upload_job(job.pk)
    job.refresh_from_db()
    assert job.state == "done"
    assert job.read == job.total == job.created + job.duplicates + job.failed
    assert job.failures.count() == job.failed
    assert admin_client.get(response["Location"]).status_code == 200


@PROPERTY
@given(files=st.lists(st.tuples(st.sampled_from(["a.jpg", "b.png", "c.tif", "d.zip"]),
                                file_bytes()), min_size=1, max_size=3))  # fmt: skip
def test_the_import_command_reports_any_file_and_never_crashes(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("import")
    for index, (name, data) in enumerate(files):
        (folder / f"{index}-{name}").write_bytes(data)
    with contextlib.suppress(CommandError):  # a refusal with a sentence is an answer
        call_command("import_images", str(folder), stdout=io.StringIO(), stderr=io.StringIO())
