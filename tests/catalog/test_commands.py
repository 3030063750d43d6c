import io
import time
import zipfile

import pytest
from django.core.management import CommandError, call_command

from catalog.models import CatalogImage
from search.vectorstores import get_vector_store
from tests.conftest import encode, photo, photo_bytes

pytestmark = pytest.mark.django_db


def run(*args, **options) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=out, **options)
    return out.getvalue()


@pytest.fixture
def pictures(tmp_path):
    """A folder with two photos and a note, a nested folder, and a zip of two photos."""
    folder = tmp_path / "pictures"
    (folder / "nested").mkdir(parents=True)
    (folder / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    (folder / "nested" / "rocket.png").write_bytes(photo_bytes("rocket.jpg", "PNG"))
    (folder / "notes.txt").write_text("not a picture")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("cats/chelsea.jpg", photo_bytes("chelsea.png"))
        zipped.writestr("brick.webp", encode(photo("brick.png"), "WEBP"))
    return folder, archive


def test_import_images_takes_files_folders_and_zips_with_tags(pictures):
    folder, archive = pictures
    output = run("import_images", str(folder), str(archive), "--tags", "Demo, test")
    assert "4 added, 0 already in the catalog, 0 rejected" in output
    assert sorted(CatalogImage.objects.values_list("title", flat=True)) == [
        "brick", "chelsea", "coffee", "rocket",
    ]  # fmt: skip
    assert all(
        tags == ["demo", "test"] for tags in CatalogImage.objects.values_list("tags", flat=True)
    )


def test_import_images_reports_duplicates_and_rejects(pictures, tmp_path):
    folder, _ = pictures
    run("import_images", str(folder))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    output = run("import_images", str(folder), str(broken))
    assert "0 added, 2 already in the catalog, 1 rejected" in output
    assert "broken.jpg" in output


def test_import_images_refuses_a_missing_path(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run("import_images", str(tmp_path / "nowhere"))


@pytest.mark.django_db(transaction=True)  # commits for real, so indexing is queued at once
def test_import_images_wait_blocks_until_indexed(pictures, eager_celery):
    folder, _ = pictures
    output = run("import_images", str(folder), "--wait", "--timeout", "60")
    assert "2 indexed" in output
    assert get_vector_store().count() == 2


def test_import_images_wait_says_to_start_a_worker_when_nothing_indexes(pictures):
    folder, _ = pictures
    with pytest.raises(CommandError, match="is a worker running"):
        run("import_images", str(folder), "--wait", "--timeout", "0.5")


def test_the_demo_catalog_loads_once(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        output = run("load_demo_catalog", "--if-empty")
    assert "15 images added" in output
    assert queued  # indexing was queued, in batches
    assert len(queued) < 15
    coffee = CatalogImage.objects.get(title="A cup of coffee")
    assert "demo" in coffee.tags
    assert "already has images" in run("load_demo_catalog", "--if-empty")


@pytest.mark.django_db(transaction=True)  # the job's tasks run as soon as it commits
def test_reindex_failed_runs_a_job_and_follows_it_to_the_end(pictures, eager_celery):
    folder, _ = pictures
    run("import_images", str(folder))
    CatalogImage.objects.update(status="failed", failure_reason="boom")
    output = run("reindex", "--failed")
    assert "over 2 image(s)" in output
    assert "Done: 2 indexed, 0 failed." in output
    assert set(CatalogImage.objects.values_list("status", flat=True)) == {"indexed"}


def test_reindex_needs_to_be_told_what(pictures):
    with pytest.raises(CommandError, match="--all, --stale, --failed"):
        run("reindex")


def test_ensure_admin_creates_a_login_once_and_prints_its_password(django_user_model):
    output = run("ensure_admin")
    assert "Admin login created: admin / " in output
    password = output.split("admin / ")[1].split()[0]
    assert django_user_model.objects.get(username="admin").check_password(password)
    assert "exists" in run("ensure_admin")


def test_ensure_admin_takes_the_login_from_the_environment(monkeypatch, django_user_model):
    monkeypatch.setenv("ADMIN_USERNAME", "curator")
    monkeypatch.setenv("ADMIN_PASSWORD", "a long passphrase")
    run("ensure_admin")
    user = django_user_model.objects.get(username="curator")
    assert user.is_superuser and user.check_password("a long passphrase")


# --- Imports from real, messy folders ---------------------------------------------------------


@pytest.fixture
def twins(tmp_path):
    """A folder holding the same picture twice under two names, and one other picture."""
    folder = tmp_path / "twins"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(photo_bytes("chelsea.png"))
    (folder / "cat (copy).jpg").write_bytes(photo_bytes("chelsea.png"))
    (folder / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    return folder


@pytest.mark.django_db(transaction=True)  # commits for real, so indexing is queued at once
def test_import_images_wait_ends_once_every_distinct_image_has_settled(twins, eager_celery):
    assert "2 added, 1 already in the catalog, 0 rejected." in run("import_images", str(twins))
    # Everything is indexed: waiting again must end at once, not at the timeout (it used to
    # wait for three images where there are two).
    started = time.monotonic()
    output = run("import_images", str(twins), "--wait", "--timeout", "30")
    assert time.monotonic() - started < 10
    assert "0 added, 3 already in the catalog, 0 rejected." in output
    assert "2 indexed" in output


@pytest.mark.parametrize("contents", [[], ["notes.txt", "song.mp3"]], ids=["empty", "no images"])
def test_import_images_refuses_a_folder_without_pictures(tmp_path, contents):
    for name in contents:
        (tmp_path / name).write_text("not a picture")
    with pytest.raises(CommandError, match=r"No image files found \(looked for .*\.heic"):
        run("import_images", str(tmp_path))


def test_import_images_reports_hostile_zips_line_by_line_and_imports_the_rest(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    with zipfile.ZipFile(tmp_path / "odd.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.zip", b"PK\x05\x06" + bytes(18))
        archive.writestr("cat.jpg", photo_bytes("chelsea.png"))
        archive.writestr("empty.png", b"")
    (tmp_path / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    output = run("import_images", str(tmp_path))
    assert "2 added, 0 already in the catalog, 3 rejected." in output
    assert f"rejected {tmp_path / 'fake.zip'}: is not a zip file" in output
    assert "odd.zip:inner.zip: is a zip file inside a zip file" in output
    assert "odd.zip:empty.png: The image is empty" in output
