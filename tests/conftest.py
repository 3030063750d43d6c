"""Shared fixtures: isolated media and vector store per test, real sample photos."""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from pathlib import Path

import pytest
import skimage.data
from django.core.files.base import ContentFile
from PIL import Image

from catalog.pipeline.indexing import images_index

SAMPLES = Path(skimage.data.__file__).parent


# What the database fixtures bring; a test that has none of them never touches a database.
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup"}


def pytest_collection_modifyitems(config, items):
    """With TESTS_USING_THE_DATABASE_ONLY=1 (`make test-postgres`, after `make test` ran
    everything on SQLite), run only the tests that use the database: the others run the
    same code whatever DATABASE_URL says, so a second pass over them proves nothing new."""
    if os.environ.get("TESTS_USING_THE_DATABASE_ONLY") != "1":
        return
    kept, skipped = [], []
    for item in items:
        uses_database = item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(
            getattr(item, "fixturenames", ())
        )
        (kept if uses_database else skipped).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    """Each test gets its own staging and media folders and vector store."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STAGING_ROOT = tmp_path / "staging"
    settings.VECTOR_STORE_PATH = tmp_path / "vectors"
    yield
    from catalog import hosting
    from search import vectorstores

    vectorstores._stores.clear()
    hosting._hosts.clear()


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with an empty cache: rows rolled back behind the services' back
    must not leave their cached counts (catalog.searchable_counts) to the next test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def health_of_a_fresh_process(monkeypatch):
    """Each test sees readiness as a process that just started: no periodic task runs under
    pytest, so once the suite had run longer than a few sweep intervals every health report
    would call beat late ("degraded"), depending on the order and speed of the tests. And no
    test's cached report answers for the next one."""
    from django.utils import timezone

    from visualsearch import health

    monkeypatch.setattr(health, "STARTED_AT", timezone.now())
    health._shared_report.forget()


@pytest.fixture
def eager_celery():
    """Run tasks in-process, as soon as they are queued."""
    from visualsearch.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = previous


def photo(name: str = "astronaut.png") -> Image.Image:
    """A real photograph that scikit-image ships, as RGB."""
    return Image.open(SAMPLES / name).convert("RGB")


def encode(image: Image.Image, format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def photo_bytes(name: str = "astronaut.png", format: str = "JPEG") -> bytes:
    return encode(photo(name), format)


def photo_file(name: str = "astronaut.png", format: str = "JPEG") -> ContentFile:
    return ContentFile(photo_bytes(name, format), name=f"{Path(name).stem}.{format.lower()}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def staff_client(client, django_user_model):
    """A curator: staff with every permission on the catalog's models (not a superuser)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("curator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
    client.force_login(user)
    return client


@pytest.fixture(scope="session")
def pinecone_server():
    """A Pinecone-compatible HTTP server on 127.0.0.1 (see tests/fakes/pinecone_server.py)."""
    from tests.fakes.pinecone_server import FakePinecone

    with FakePinecone() as server:
        yield server


@pytest.fixture
def pinecone(pinecone_server):
    """The same server with no indexes, faults or recorded requests left from other tests."""
    pinecone_server.reset()
    return pinecone_server


@pytest.fixture
def use_pinecone(settings, pinecone):
    """The project configured for the fake Pinecone (index "catalog"), giving up fast."""
    settings.VECTOR_STORE = "pinecone"
    settings.PINECONE_API_KEY = pinecone.api_key
    settings.PINECONE_HOST = pinecone.url
    settings.PINECONE_INDEX = "catalog"
    settings.PINECONE_TIMEOUT = 2.0
    settings.PINECONE_MAX_RETRIES = 1
    return pinecone


def pinecone_store(server, dimension: int, **options):
    """A PineconeVectorStore on `server` that gives up fast, for tests."""
    from search.vectorstores.pinecone import PineconeOptions, PineconeVectorStore

    defaults = {"index_name": "contract", "timeout": 2.0, "backoff_base": 0.01, "backoff_max": 0.05}
    return PineconeVectorStore(
        PineconeOptions(api_key=server.api_key, host=server.url, **{**defaults, **options}),
        dimension=dimension,
    )


@pytest.fixture(scope="session")
def picture_server():
    """A web server on 127.0.0.1 serving the coffee photo at /picture.jpg
    (tests/fakes/picture_server.py); /slow answers after 3 s."""
    from tests.fakes.picture_server import PictureServer

    with PictureServer(photo_bytes("coffee.png"), slow_seconds=3) as server:
        yield server


@pytest.fixture
def pictures(picture_server):
    """The picture server, with no requests recorded yet."""
    picture_server.requests.clear()
    return picture_server


@pytest.fixture
def loopback_allowed(settings):
    """Search by URL may fetch from 127.0.0.1, where the picture server is (tests only)."""
    settings.URL_FETCH_ALLOW_LOOPBACK = True


@pytest.fixture(scope="session")
def cloudinary_server():
    """A Cloudinary Upload-API-compatible server on 127.0.0.1 (tests/fakes/cloudinary_server.py)."""
    from tests.fakes.cloudinary_server import FakeCloudinary

    with FakeCloudinary() as server:
        yield server


@pytest.fixture
def cloudinary_fake(cloudinary_server):
    """The server emptied, with the SDK's process-wide config pointed at it, then put back."""
    import cloudinary

    cloudinary_server.reset()
    saved = dict(vars(cloudinary.config()))
    cloudinary.config(**cloudinary_server.sdk_config())
    yield cloudinary_server
    config = cloudinary.config()
    vars(config).clear()
    vars(config).update(saved)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1: boto3 and django-storages reach it over HTTP, and so
    do the processes a test starts. Buckets are shared by the whole run: name your own."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_REGION, S3_KEY, S3_SECRET = "us-east-1", "test", "test"


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )


def s3_storage_options(endpoint: str, bucket: str, **options) -> dict:
    """django-storages' S3Storage OPTIONS for a bucket on `endpoint`."""
    return {
        "bucket_name": bucket,
        "endpoint_url": endpoint,
        "region_name": S3_REGION,
        "access_key": S3_KEY,
        "secret_key": S3_SECRET,
        "querystring_auth": False,
        **options,
    }


def s3_empty_and_delete(s3, bucket: str) -> None:
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium, driven by Playwright (its own browser download cannot
    work here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium chromium-driver")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls made by
    # the test itself are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


# Tags for five sample photos: some shared, one in two spellings, one photo with two.
TAGGED = {
    "astronaut.png": "space, person",
    "rocket.jpg": "Space",
    "coffee.png": "food",
    "chelsea.png": "animal",
    "brick.png": "texture",
}


@pytest.fixture
def tagged():
    """The TAGGED photos in the catalog, indexed; by file name."""
    from catalog import services

    images = {
        name: services.image_create(file=photo_file(name), tags=tags)[0]
        for name, tags in TAGGED.items()
    }
    images_index(image_ids=[image.pk for image in images.values()])
    return images


def cpu_burnt_after(run, idle_seconds: float, tries: int = 3) -> list[float]:
    """The CPU seconds this process burns while it sleeps just after `run()`, per try:
    what spinning math threads (BLAS, ONNX Runtime) take from everything else."""
    burnt = []
    for _ in range(tries):
        time.sleep(idle_seconds)  # whatever ran before has gone quiet
        run()
        began = time.process_time()
        time.sleep(idle_seconds)
        burnt.append(time.process_time() - began)
    return burnt
