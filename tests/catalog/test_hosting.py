"""Each image host end to end: publish on indexing, reachable URLs, delete removes both.

S3 goes through django-storages and boto3 over HTTP to moto's S3 server on 127.0.0.1;
Cloudinary through its real SDK to the Upload API server in tests/fakes.
"""

import io
import json
import urllib.error
import urllib.request

import pytest
from PIL import Image

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def is_gone(url: str) -> bool:
    try:
        fetch(url)
    except urllib.error.HTTPError as error:
        return error.code in (403, 404)
    return False


def index_one(name: str = "chelsea.png") -> CatalogImage:
    image, _ = services.image_create(file=photo_file(name))
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    return image


def delete(image, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=image)


# --- S3 through django-storages ---------------------------------------------------------


def public_read_policy(bucket: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_host(settings, s3_server):
    import boto3

    bucket = "catalog-images"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    s3.create_bucket(Bucket=bucket)
    # Images are public, as docs/backends.md's S3 set-up makes them: a bucket policy, no ACLs.
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read_policy(bucket)))
    settings.IMAGE_HOST = "storages"
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_server,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "querystring_auth": False,
            },
        },
    }
    yield s3, bucket
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


def test_s3_publishes_the_original_and_thumbnail_at_reachable_urls(s3_host, s3_server):
    image = index_one()
    assert image.image_host == "storages"
    assert image.image_url.startswith(f"{s3_server}/catalog-images/catalog/")
    assert fetch(image.image_url) == photo_bytes("chelsea.png")
    with Image.open(io.BytesIO(fetch(image.thumbnail_url))) as thumbnail:
        assert (thumbnail.format, max(thumbnail.size)) == ("WEBP", 320)
    assert image.staged_file.name == ""


def test_s3_publishing_twice_leaves_two_objects(s3_host):
    s3, bucket = s3_host
    image = index_one()
    CatalogImage.objects.filter(pk=image.pk).update(published_at=None, staged_file="")
    images_index(image_ids=[image.pk])  # publishes again, from the hosted copy
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([image.hosted_key, image.hosted_key[:-4] + ".thumb.webp"])


def test_s3_delete_removes_original_and_thumbnail(
    s3_host, django_capture_on_commit_callbacks, eager_celery
):
    s3, bucket = s3_host
    image = index_one()
    delete(image, django_capture_on_commit_callbacks)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert is_gone(image.image_url) and is_gone(image.thumbnail_url)


def test_an_unreachable_s3_delays_the_image_without_losing_it(settings, s3_host):
    from catalog.hosting import ImageHostError

    options = settings.STORAGES["images"]["OPTIONS"]
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            **settings.STORAGES["images"],
            "OPTIONS": {**options, "endpoint_url": "http://127.0.0.1:1"},
        },
    }
    image, _ = services.image_create(file=photo_file())
    with pytest.raises(ImageHostError):
        images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == "processing" and not image.is_published
    assert image.staged_file.storage.exists(image.staged_file.name)


# --- Cloudinary through its SDK -----------------------------------------------------------


@pytest.fixture
def cloudinary_host(settings, cloudinary_fake):
    fake = cloudinary_fake
    settings.IMAGE_HOST = "cloudinary"
    settings.CLOUDINARY_FOLDER = "visualsearch"
    # Query parameters of CLOUDINARY_URL become SDK options: send uploads and URLs here.
    settings.CLOUDINARY_URL = (
        f"cloudinary://{fake.api_key}:{fake.api_secret}@{fake.cloud_name}"
        f"?upload_prefix={fake.url}&secure=false&cname={fake.host}"
    )
    return fake


def test_cloudinary_publishes_under_a_public_id_derived_from_the_catalog_id(cloudinary_host):
    image = index_one()
    assert image.image_host == "cloudinary"
    assert image.hosted_key == f"visualsearch/catalog-{image.pk}"
    assert fetch(image.image_url) == photo_bytes("chelsea.png")
    assert "c_fill" in image.thumbnail_url and "f_auto" in image.thumbnail_url
    with Image.open(io.BytesIO(fetch(image.thumbnail_url))) as thumbnail:
        assert thumbnail.size == (320, 320)
    assert len(cloudinary_host.assets) == 1  # the thumbnail is a transformation, not an upload


def test_cloudinary_publishing_three_times_leaves_one_asset(cloudinary_host):
    image = index_one()
    for _ in range(2):
        CatalogImage.objects.filter(pk=image.pk).update(published_at=None)
        images_index(image_ids=[image.pk])
    assert cloudinary_host.upload_counts[image.hosted_key] == 3
    assert list(cloudinary_host.assets) == [image.hosted_key]


def test_cloudinary_delete_removes_the_asset_and_its_urls(
    cloudinary_host, django_capture_on_commit_callbacks, eager_celery
):
    image = index_one()
    delete(image, django_capture_on_commit_callbacks)
    assert cloudinary_host.assets == {}
    assert is_gone(image.image_url) and is_gone(image.thumbnail_url)


def test_a_cloudinary_outage_delays_the_image_and_the_retry_publishes_it(cloudinary_host):
    from catalog.hosting import ImageHostError

    image, _ = services.image_create(file=photo_file())
    cloudinary_host.fail_next(3, status=503, path_contains="/image/upload")
    with pytest.raises(ImageHostError):
        images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == "processing" and not image.is_published
    assert image.staged_file.storage.exists(image.staged_file.name)

    cloudinary_host.reset_faults()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == "indexed" and image.is_published
    assert image.staged_file.name == ""


def test_when_retries_run_out_the_row_says_why_and_keeps_the_upload(cloudinary_host):
    from celery.exceptions import Retry

    from catalog.tasks import MAX_RETRIES, index_images

    image, _ = services.image_create(file=photo_file())
    cloudinary_host.fail_next(100, status=500, path_contains="/image/upload")
    with pytest.raises(Retry):
        index_images.apply(args=[[image.pk]], retries=0, throw=True)
    with pytest.raises(Exception, match="Cloudinary upload failed"):
        index_images.apply(args=[[image.pk]], retries=MAX_RETRIES, throw=True)
    image.refresh_from_db()
    assert image.status == "failed"
    assert "image host failed" in image.failure_reason
    assert image.staged_file.storage.exists(image.staged_file.name)


# --- Local disk ---------------------------------------------------------------------------


def test_local_thumbnails_exist_with_the_right_size_and_go_with_the_image(
    client, settings, django_capture_on_commit_callbacks, eager_celery
):
    image = index_one("rocket.jpg")  # 640 x 427
    thumbnail_path = settings.MEDIA_ROOT / (image.hosted_key.rsplit(".", 1)[0] + ".thumb.webp")
    with Image.open(thumbnail_path) as thumbnail:
        assert thumbnail.size == (320, 214)
    response = client.get(image.thumbnail_url)  # served by the app under /media/
    assert response.status_code == 200
    delete(image, django_capture_on_commit_callbacks)
    assert not thumbnail_path.exists()
    assert not (settings.MEDIA_ROOT / image.hosted_key).exists()


# --- Files shared through a delete and a re-upload, half-written files --------------------


@pytest.fixture(params=["local", "storages"])
def storage_host(request, settings):
    """The two storage hosts: the local disk, and S3 through django-storages (moto)."""
    if request.param == "storages":
        request.getfixturevalue("s3_host")
    return request.param


def download(client, url: str) -> bytes:
    if url.startswith("http"):
        return fetch(url)
    response = client.get(url)  # the local host's files, served by the app under /media/
    assert response.status_code == 200, url
    return b"".join(response.streaming_content)


def test_a_late_delete_of_an_image_never_removes_the_files_of_its_reupload(
    storage_host, client, django_capture_on_commit_callbacks, eager_celery
):
    first = index_one("coffee.png")
    with django_capture_on_commit_callbacks() as queued:  # its clean-up waits in the queue
        services.image_delete(image=first)
    again = index_one("coffee.png")  # the same bytes, uploaded again once the row is gone
    for task in queued:
        task()
    assert download(client, again.image_url) == photo_bytes("coffee.png")
    with Image.open(io.BytesIO(download(client, again.thumbnail_url))) as thumbnail:
        assert thumbnail.format == "WEBP"


def test_a_delete_that_ran_first_leaves_the_reupload_whole(
    storage_host, client, django_capture_on_commit_callbacks, eager_celery
):
    first = index_one("coffee.png")
    delete(first, django_capture_on_commit_callbacks)
    again = index_one("coffee.png")
    assert download(client, again.image_url) == photo_bytes("coffee.png")


@pytest.mark.parametrize("host", ["local", "storages", "cloudinary"])
def test_removing_a_hosted_file_that_a_live_row_points_at_keeps_it(request, host, client):
    if host != "local":
        request.getfixturevalue({"storages": "s3_host", "cloudinary": "cloudinary_host"}[host])
    image = index_one()
    services.hosted_image_remove(host_name=image.image_host, key=image.hosted_key)
    assert download(client, image.image_url) == photo_bytes("chelsea.png")


def test_each_row_gets_its_own_hosted_key(storage_host):
    from catalog.hosting import get_image_host

    data = photo_bytes("rocket.jpg")
    host = get_image_host()
    keys = {
        host.publish(image_id=pk, sha256=sha256(data), data=data, extension="jpg").key
        for pk in (1, 2)
    }
    assert len(keys) == 2


@pytest.mark.parametrize("which", ["original", "thumbnail"])
def test_publishing_over_a_half_written_file_leaves_the_whole_file(storage_host, client, which):
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages

    from catalog.hosting import get_image_host

    data = photo_bytes("rocket.jpg")
    host = get_image_host()
    hosted = host.publish(image_id=7, sha256=sha256(data), data=data, extension="jpg")
    url = hosted.url if which == "original" else hosted.thumbnail_url
    whole = download(client, url)
    # What a crash in the middle of a write leaves where the file goes.
    storage = storages["default" if storage_host == "local" else "images"]
    name = hosted.key if which == "original" else hosted.key.rsplit(".", 1)[0] + ".thumb.webp"
    storage.delete(name)
    assert storage.save(name, ContentFile(whole[: len(whole) // 2])) == name

    again = host.publish(image_id=7, sha256=sha256(data), data=data, extension="jpg")
    assert again == hosted
    assert download(client, url) == whole


def test_a_local_write_that_fails_leaves_nothing_at_the_key(settings, monkeypatch):
    import errno
    import os

    from catalog.hosting import ImageHostError, get_image_host

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    data = photo_bytes("rocket.jpg")
    with pytest.raises(ImageHostError, match="No space left"):
        get_image_host().publish(image_id=7, sha256=sha256(data), data=data, extension="jpg")
    leftovers = [path for path in (settings.MEDIA_ROOT / "catalog").rglob("*") if path.is_file()]
    assert leftovers == []


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- Removal deletes only what the catalog published ----------------------------------------
# remove_hosted_image's arguments come from the broker: whoever can write to it must not be
# able to delete any object of the bucket, only keys of the shapes the hosts make.

SHA = "ab" + "0" * 62
NOT_OURS = [
    "../secret",
    "other/prefix/x.jpg",
    "catalog/ab/not-a-hash.jpg",  # the right prefix, the wrong shape
    f"catalog/cd/{SHA}-1.jpg",  # its folder is not its hash's first two characters
    f"catalog/ab/{SHA}-1.thumb.webp",  # a thumbnail goes with its original, never alone
    f"catalog/ab/{SHA}-1.jpg/../../../other/x.jpg",
    f"/catalog/ab/{SHA}-1.jpg",
    f"catalog/ab/{SHA}-1.jpg\n",
    "",
]


def plant(storage_host: str, settings, key: str) -> callable:
    """An object at `key` that someone else owns; returns a check that it is still there."""
    if storage_host == "local":
        path = (settings.MEDIA_ROOT / key.lstrip("/")).resolve() if key else settings.MEDIA_ROOT
        if path.is_dir():
            path = path / "keep.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not the catalog's")
        return path.exists
    from django.core.files.storage import storages

    client = storages["images"].connection.meta.client
    bucket = storages["images"].bucket_name
    # moto cannot store a key ending in a newline: the key without it stands in, which the
    # removal must not reach by trimming what it was given either.
    name = key.strip() or "keep.txt"
    client.put_object(Bucket=bucket, Key=name, Body=b"not the catalog's")

    def still_there() -> bool:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return name in {item["Key"] for item in listed}

    return still_there


@pytest.mark.parametrize("key", NOT_OURS)
def test_the_removal_task_refuses_a_key_the_catalog_never_makes(
    storage_host, settings, key, caplog
):
    from catalog.tasks import remove_hosted_image

    still_there = plant(storage_host, settings, key)
    remove_hosted_image.apply(args=[storage_host, key], throw=True)  # no retry, no error
    assert still_there()
    assert any(
        record.levelname == "ERROR" and "not a key the catalog makes" in record.getMessage()
        for record in caplog.records
    )


def test_the_removal_task_removes_a_real_key_of_a_deleted_row(storage_host, settings, client):
    from catalog.tasks import remove_hosted_image

    image = index_one()
    CatalogImage.objects.filter(pk=image.pk).delete()  # the row is gone, its files are not yet
    remove_hosted_image.apply(args=[image.image_host, image.hosted_key], throw=True)
    for url in (image.image_url, image.thumbnail_url):
        assert is_gone(url) if url.startswith("http") else client.get(url).status_code == 404


def test_the_removal_task_removes_a_key_of_the_older_shared_shape(storage_host, settings):
    """Keys made before each row got its own: `catalog/<sha[:2]>/<sha>.<ext>`."""
    from catalog.tasks import remove_hosted_image

    key = f"catalog/ab/{SHA}.jpg"
    still_there = plant(storage_host, settings, key)
    remove_hosted_image.apply(args=[storage_host, key], throw=True)
    assert not still_there()


def test_the_removal_task_refuses_a_host_it_does_not_know_without_retrying(caplog):
    from catalog.tasks import remove_hosted_image

    remove_hosted_image.apply(args=["ftp", f"catalog/ab/{SHA}-1.jpg"], throw=True)
    assert any(record.levelname == "ERROR" for record in caplog.records)


@pytest.mark.parametrize(
    "public_id",
    ["other/catalog-1", "visualsearch/anything", "catalog-1", "visualsearch/catalog-1x"],
)
def test_the_removal_task_refuses_a_cloudinary_id_the_catalog_never_makes(
    cloudinary_host, public_id, caplog
):
    import cloudinary.uploader

    from catalog.hosting import get_image_host
    from catalog.tasks import remove_hosted_image

    get_image_host()  # configures the SDK for the fake
    cloudinary.uploader.upload(photo_bytes("rocket.jpg"), public_id=public_id)
    remove_hosted_image.apply(args=["cloudinary", public_id], throw=True)
    assert public_id in cloudinary_host.assets
    assert any("not a key the catalog makes" in record.getMessage() for record in caplog.records)


def test_the_removal_task_removes_a_real_cloudinary_asset_of_a_deleted_row(cloudinary_host):
    from catalog.tasks import remove_hosted_image

    image = index_one()
    CatalogImage.objects.filter(pk=image.pk).delete()
    remove_hosted_image.apply(args=["cloudinary", image.hosted_key], throw=True)
    assert cloudinary_host.assets == {}


# --- Deactivating takes an image off its host; activating publishes it again -----------------
# Deactivation is how curators answer takedown requests: the original and its thumbnail must
# stop being served, not only leave search results. The original is kept, privately, in the
# staging storage, which is what activating publishes again.


def served(client, url: str) -> bool:
    if url.startswith("http"):
        return not is_gone(url)
    return client.get(url).status_code == 200


def set_active(image, active: bool, django_capture_on_commit_callbacks) -> CatalogImage:
    with django_capture_on_commit_callbacks(execute=True):
        services.images_set_active(images=[image], is_active=active)
    image.refresh_from_db()
    return image


@pytest.fixture(params=["local", "storages", "cloudinary"])
def any_host(request):
    if request.param != "local":
        request.getfixturevalue(
            {"storages": "s3_host", "cloudinary": "cloudinary_host"}[request.param]
        )
    return request.param


def test_deactivating_stops_serving_the_original_and_thumbnail_and_keeps_the_bytes(
    any_host, client, django_capture_on_commit_callbacks, eager_celery
):
    image = index_one()
    urls = [image.image_url, image.thumbnail_url]
    assert all(served(client, url) for url in urls)
    image = set_active(image, False, django_capture_on_commit_callbacks)
    assert not any(served(client, url) for url in urls)
    assert (image.image_url, image.thumbnail_url, image.hosted_key) == ("", "", "")
    assert not image.is_published
    with image.staged_file.open("rb") as kept:  # privately, in the staging storage
        assert kept.read() == photo_bytes("chelsea.png")


def test_activating_publishes_it_again_from_the_kept_copy(
    any_host, client, django_capture_on_commit_callbacks, eager_celery
):
    image = set_active(index_one(), False, django_capture_on_commit_callbacks)
    image = set_active(image, True, django_capture_on_commit_callbacks)
    assert image.is_published and image.status == "indexed"
    assert download_any(client, image.image_url) == photo_bytes("chelsea.png")
    assert served(client, image.thumbnail_url)
    assert image.staged_file.name == ""  # published: the staged copy went again


def test_an_image_activated_before_its_unpublishing_ran_stays_published(
    storage_host, client, django_capture_on_commit_callbacks, eager_celery
):
    image = index_one()
    with django_capture_on_commit_callbacks() as late:  # the unpublishing waits in the queue
        services.images_set_active(images=[image], is_active=False)
    set_active(image, True, django_capture_on_commit_callbacks)
    for task in late:
        task()
    image.refresh_from_db()
    assert image.is_published and served(client, image.image_url)
    assert image.staged_file.name == ""
    assert not list_staged()  # the copy it made for nothing was removed


def test_a_host_that_fails_the_unpublishing_leaves_it_published_for_the_retry(
    cloudinary_host, client, django_capture_on_commit_callbacks
):
    from celery.exceptions import Retry

    from catalog.tasks import unpublish_images

    image = index_one()
    services.images_set_active(images=[image], is_active=False)
    cloudinary_host.fail_next(100, status=500)
    with pytest.raises(Retry):
        unpublish_images.apply(args=[[image.pk]], throw=True)
    image.refresh_from_db()
    assert image.is_published and image.staged_file.name == ""
    cloudinary_host.reset_faults()
    unpublish_images.apply(args=[[image.pk]], throw=True)
    image.refresh_from_db()
    assert not image.is_published and cloudinary_host.assets == {}


def test_the_sweep_unpublishes_inactive_images_left_published(
    storage_host, client, django_capture_on_commit_callbacks, eager_celery
):
    """Deactivated before this version, or their task lost with the broker."""
    from datetime import timedelta

    from catalog.pipeline import recovery

    image = index_one()
    CatalogImage.objects.filter(pk=image.pk).update(
        is_active=False, updated_at=image.updated_at - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        swept = recovery.catalog_sweep(older_than=timedelta(minutes=15))
    assert swept.unpublished == [image.pk]
    assert not served(client, image.image_url)
    image.refresh_from_db()
    assert not image.is_published


def test_deleting_an_inactive_image_removes_its_kept_copy(
    storage_host, django_capture_on_commit_callbacks, eager_celery
):
    image = set_active(index_one(), False, django_capture_on_commit_callbacks)
    assert list_staged()
    with django_capture_on_commit_callbacks(execute=True):
        services.image_delete(image=image)
    assert not list_staged()


def download_any(client, url: str) -> bytes:
    return fetch(url) if url.startswith("http") else b"".join(client.get(url).streaming_content)


def list_staged() -> list[str]:
    from django.conf import settings

    root = settings.STAGING_ROOT
    return [str(path) for path in root.rglob("*") if path.is_file()] if root.exists() else []
