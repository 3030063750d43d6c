"""Catalog sync (manage.py sync_catalog): a feed of an outside catalog made into catalog
items, with heavy work only where something changed, bad rows reported by line, and
pruning that deactivates and never deletes.

Pictures come from a real web server on 127.0.0.1 that answers conditional requests, so
"downloads nothing the second time" is counted in bytes on the wire.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command

from bench.picture_server import PictureServer as FeedPictureServer
from bench.picture_server import picture
from catalog.feeds import picture_list
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from search.vectorstores import get_vector_store

pytestmark = pytest.mark.django_db

Status = CatalogImage.Status


@pytest.fixture
def server(loopback_allowed):
    """The picture server, which the fetcher may reach on 127.0.0.1 (tests only)."""
    with FeedPictureServer() as running:
        for seed, name in enumerate(["mug", "cup", "cup-side", "bowl", "plate", "spoon"]):
            running.files[f"/p/{name}.png"] = picture(seed)
        running.files["/p/notes.png"] = b"these are notes, not a picture"
        yield running


def sync(*args: str) -> tuple[str, str, int]:
    """The command's stdout, stderr and exit status."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sync_catalog", *args, stdout=out, stderr=err)
    except CommandError as exc:
        err.write(f"CommandError: {exc}\n")
        return out.getvalue(), err.getvalue(), exc.returncode
    return out.getvalue(), err.getvalue(), 0


def write_feed(tmp_path, text: str, name: str = "shop.csv", server=None):
    path = tmp_path / name
    path.write_text(text.replace("{p}", server.url("/p") if server else ""))
    return str(path)


SHOP = """\
external_id,image,additional_images,title,tags,link_url,metadata.price
mug,{p}/mug.png,,Mug,"kitchen, blue",https://shop.example/mug,12
cup,{p}/cup.png,{p}/cup-side.png,Cup,kitchen,https://shop.example/cup,8
bowl,{p}/bowl.png,,Bowl,,,
plate,{p}/plate.png,,Plate,,,
"""


def item(external_id: str) -> list[CatalogImage]:
    return list(CatalogImage.objects.filter(external_id=external_id).order_by("id"))


def test_the_first_sync_creates_every_item_and_indexes_its_pictures(
    tmp_path, server, eager_celery, django_capture_on_commit_callbacks
):
    feed = write_feed(tmp_path, SHOP, server=server)
    with django_capture_on_commit_callbacks(execute=True):
        out, err, status = sync(feed)
    assert status == 0, err
    assert "created 4, updated 0, unchanged 0, deactivated 0, failed 0" in out
    assert "5 new picture(s) queued for embedding" in out
    [mug] = item("mug")
    assert (mug.title, mug.tags, mug.link_url, mug.metadata) == (
        "Mug",
        ["blue", "kitchen"],
        "https://shop.example/mug",
        {"price": "12"},
    )
    assert mug.source_url == server.url("/p/mug.png") and mug.source_etag
    assert [image.title for image in item("cup")] == ["Cup", "Cup"]  # main picture first
    assert set(CatalogImage.objects.values_list("status", flat=True)) == {Status.INDEXED}
    assert get_vector_store().count() == 5


def test_a_second_sync_changes_nothing_and_downloads_no_picture(tmp_path, server):
    feed = write_feed(tmp_path, SHOP, server=server)
    sync(feed)
    before = list(CatalogImage.objects.values_list("pk", "updated_at", "staged_file"))
    server.forget_requests()
    out, err, status = sync(feed)
    assert status == 0, err
    assert "created 0, updated 0, unchanged 4, deactivated 0, failed 0" in out
    assert "0 new picture(s) queued for embedding, 0 bytes of pictures downloaded" in out
    assert server.statuses == [304] * 5  # one conditional request per picture
    assert server.body_bytes == 0
    assert list(CatalogImage.objects.values_list("pk", "updated_at", "staged_file")) == before


CHANGED_SHOP = """\
external_id,image,additional_images,title,tags,link_url,metadata.price
mug,{p}/mug.png,,Big mug,"kitchen, blue",https://shop.example/mug,14
cup,{p}/cup.png,{p}/cup-side.png,Cup,kitchen,https://shop.example/cup,8
bowl,{p}/bowl.png,,Bowl,,,
,{p}/spoon.png,,No id,,,
spoon,ftp://files.example/spoon.png,,Spoon,,,
notes,{p}/notes.png,,Notes,,,
mug,{p}/spoon.png,,Mug again,,,
"""


def test_a_changed_feed_changes_exactly_what_changed(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    images_index(image_ids=list(CatalogImage.objects.values_list("pk", flat=True)))
    [old_bowl] = item("bowl")
    [old_mug] = item("mug")
    server.files["/p/bowl.png"] = picture(40)  # the bowl has a new photo
    server.forget_requests()

    out, err, status = sync(write_feed(tmp_path, CHANGED_SHOP, server=server), "--prune")

    assert status == 1
    assert "created 0, updated 2, unchanged 1, deactivated 1, failed 4" in out
    assert "1 new picture(s) queued for embedding" in out
    # The one new picture and the row that is not one; every other answer was a 304.
    assert server.body_bytes == len(picture(40)) + len(server.files["/p/notes.png"])
    bad = [line for line in err.splitlines() if line.startswith("line ")]
    assert bad == [
        "line 5: invalid_external_id: `external_id` is empty; every item needs one.",
        "line 6, spoon: url_not_allowed: A feed's pictures are http:// or https:// URLs, or "
        "paths relative to the feed; `ftp:` addresses are not read.",
        f"line 7, notes: not_an_image: {server.url('/p/notes.png')}: The data is not an "
        "image; send a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file.",
        "line 8, mug: duplicate_external_id: `external_id` mug is on line 2 already; an item "
        "takes one row (list its other pictures in additional_images).",
    ]
    [mug] = item("mug")
    assert (mug.pk, mug.title, mug.metadata, mug.status) == (
        old_mug.pk,
        "Big mug",
        {"price": "14"},
        Status.INDEXED,  # re-indexed from its cached embedding, no model run
    )
    old, new = item("bowl")
    assert old.pk == old_bowl.pk and (old.is_active, old.deactivated_by_source) == (False, True)
    assert (new.is_active, new.status, new.embedding) == (True, Status.PENDING, None)
    [plate] = item("plate")
    assert (plate.is_active, plate.deactivated_by_source) == (False, True)
    assert CatalogImage.objects.filter(status=Status.PENDING).count() == 1  # one re-embedding
    assert CatalogImage.objects.count() == 6  # deactivated, never deleted


def test_an_item_whose_row_failed_is_not_pruned(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    broken = SHOP.replace("{p}/plate.png", "{p}/missing.png")
    out, err, status = sync(write_feed(tmp_path, broken, server=server), "--prune")
    assert status == 1
    assert "line 5, plate: url_fetch_failed" in err
    assert "deactivated 0" in out
    assert item("plate")[0].is_active


def test_without_prune_items_no_longer_listed_stay_active_and_are_counted(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    out, _, status = sync(write_feed(tmp_path, SHOP.rsplit("plate,", 1)[0], server=server))
    assert status == 0
    assert "1 item(s) in the catalog are no longer in the feed and stay active" in out
    assert item("plate")[0].is_active


def test_a_dry_run_says_what_it_would_do_and_writes_nothing(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    before = list(CatalogImage.objects.values())
    feed = (
        SHOP.replace("Mug", "Big mug")
        .replace("plate,", "fork,")
        .replace("{p}/plate.png", "{p}/spoon.png")
    )
    out, err, status = sync(write_feed(tmp_path, feed, server=server), "--prune", "--dry-run")
    assert status == 0, err
    assert out.splitlines()[:6] == [
        "update mug (title)",
        "leave cup",
        "leave bowl",
        "create fork",
        "deactivate plate (1 picture(s))",
        "Dry run: nothing was written; this is what a sync would do.",
    ]
    assert "created 1, updated 1, unchanged 2, deactivated 1, failed 0" in out
    assert list(CatalogImage.objects.values()) == before


def test_a_json_lines_feed_is_read_like_a_csv_one(tmp_path, server):
    lines = [
        {
            "external_id": 42,
            "image": "{p}/mug.png",
            "additional_images": ["{p}/cup.png"],
            "title": "Mug",
            "tags": ["kitchen", "Blue"],
            "link_url": "https://shop.example/42",
            "metadata": {"price": 12, "in_stock": True, "sizes": ["s", "m"]},
        },
        {"external_id": "bowl", "image": "{p}/bowl.png", "metadata.colour": "red"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n{not json\n"
    out, err, status = sync(write_feed(tmp_path, text, "shop.jsonl", server=server))
    assert status == 1
    assert "created 2, updated 0, unchanged 0, deactivated 0, failed 1" in out
    assert "line 4: unreadable_row: The line cannot be read: it is not JSON" in err
    first, second = item("42")
    assert (first.tags, first.metadata) == (
        ["blue", "kitchen"],
        {"price": 12, "in_stock": True, "sizes": ["s", "m"]},
    )
    assert first.source_url.endswith("/p/mug.png") and second.source_url.endswith("/p/cup.png")
    assert item("bowl")[0].metadata == {"colour": "red"}


def test_a_line_that_cannot_be_read_stops_pruning(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    cut_short = SHOP.rsplit("plate,", 1)[0] + "plate,{p}/pla"  # an upload cut mid-line
    out, err, status = sync(write_feed(tmp_path, cut_short, server=server), "--prune")
    assert status == 1
    assert "line 5: unreadable_row" in err and "it has 2 cells where the header names 7" in err
    assert "Pruning refused: line(s) 5 could not be read" in out
    assert CatalogImage.objects.filter(is_active=False).count() == 0


def test_a_feed_with_no_good_row_never_prunes(tmp_path, server):
    sync(write_feed(tmp_path, SHOP, server=server))
    out, _, status = sync(write_feed(tmp_path, SHOP.split("\n", 1)[0] + "\n"), "--prune")
    assert status == 1
    assert "Pruning refused: no row of the feed was synced" in out
    assert CatalogImage.objects.filter(is_active=False).count() == 0


def test_pictures_are_read_relative_to_a_local_feed_and_never_outside_it(tmp_path):
    folder = tmp_path / "feed"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "mug.png").write_bytes(picture(1))
    (tmp_path / "secret.png").write_bytes(picture(2))
    text = "external_id,image\nmug,photos/mug.png\nsecret,../secret.png\nlost,photos/no.png\n"
    feed = write_feed(folder, text)
    out, err, status = sync(feed)
    assert status == 1
    assert "created 1" in out
    assert "line 3, secret: path_not_allowed: ../secret.png is outside the feed's folder" in err
    assert "line 4, lost: file_not_found: photos/no.png: There is no such file in the feed's" in err
    assert item("mug")[0].sha256 == hashlib.sha256(picture(1)).hexdigest()
    out, _, _ = sync(feed)
    assert "created 0, updated 0, unchanged 1" in out


def test_a_feed_at_a_url_names_its_pictures_relative_to_itself(server):
    server.files["/feeds/shop.csv"] = b"external_id,image\nmug,../p/mug.png\n"
    _, err, status = sync(server.url("/feeds/shop.csv"))
    assert status == 0, err
    assert item("mug")[0].source_url == server.url("/p/mug.png")


def test_pictures_on_private_networks_are_refused_by_default(tmp_path, server, settings):
    assert settings.SYNC_ALLOW_PRIVATE_NETWORKS is False
    text = "external_id,image\nnas,http://10.0.0.7/mug.png\nmeta,http://169.254.169.254/x.png\n"
    _, err, status = sync(write_feed(tmp_path, text))
    assert status == 1
    assert "line 2, nas: url_not_allowed" in err and "line 3, meta: url_not_allowed" in err
    assert CatalogImage.objects.count() == 0


def test_a_feed_that_cannot_be_read_exits_2(tmp_path):
    _, err, status = sync(str(tmp_path / "nowhere.csv"))
    assert status == 2 and "does not exist" in err
    _, err, status = sync(write_feed(tmp_path, "id,image\n1,a.png\n"))
    assert status == 2 and "no `external_id` column" in err


def test_a_semicolon_separated_feed_is_read_too(tmp_path, server):
    text = SHOP.replace(",", ";").replace('"kitchen; blue"', '"kitchen, blue"')
    _, err, status = sync(write_feed(tmp_path, text, server=server))
    assert status == 0, err
    assert item("mug")[0].tags == ["blue", "kitchen"]


def test_additional_images_are_separated_by_spaces_or_bars_in_a_csv_cell():
    assert picture_list("a.png | b.png  https://x.example/c.png\td.png") == [
        "a.png",
        "b.png",
        "https://x.example/c.png",
        "d.png",
    ]
    assert picture_list(["a.png", " b.png "]) == ["a.png", "b.png"]
    assert picture_list([1, 2]) is None


def test_json_lines_values_no_database_can_store_are_bad_rows_not_a_crash(tmp_path, server):
    # JSON escapes can carry a lone surrogate, a number past a float or a tag of no text.
    text = (
        '{"external_id": "a", "image": "{p}/mug.png", "title": "\\ud800"}\n'
        '{"external_id": "b", "image": "{p}/cup.png", "tags": [1, 2]}\n'
        '{"external_id": "c", "image": "{p}/bowl.png", "metadata": {"n": 1' + "0" * 400 + "}}\n"
        '{"external_id": "d", "image": "{p}/plate.png", "title": "Plate"}\n'
    )
    out, err, status = sync(write_feed(tmp_path, text, "odd.jsonl", server=server))
    assert status == 1
    assert "created 1, updated 0, unchanged 0, deactivated 0, failed 3" in out
    assert "line 1, a: invalid_title" in err
    assert "line 2, b: invalid_tags" in err
    assert "line 3, c: invalid_metadata" in err
