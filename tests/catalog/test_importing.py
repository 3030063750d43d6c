"""Bulk imports from folders and zip files, including the hostile ones real use brings."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from catalog.importing import images_import, wait_until_settled
from catalog.models import CatalogImage
from catalog.sources import find_image_sources, uploaded_sources
from search.imaging import too_large_error
from tests.conftest import encode, photo

pytestmark = pytest.mark.django_db
MB = 1024 * 1024


def small(name: str, format: str = "JPEG", size: int = 96) -> bytes:
    """A real photo, shrunk so that tests stay fast; each name is a different picture."""
    return encode(photo(name).resize((size, size)), format)


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def add_zeros(path: Path, name: str, size: int) -> None:
    """Append a member of `size` zero bytes, written in chunks: the test never holds it."""
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        chunk = bytes(MB)
        for _ in range(size // MB):
            member.write(chunk)


def patch_central_entry(path: Path, member: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite one field of `member`'s central directory entry, as a hostile tool would."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start + 1)) != -1:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_length] == member.encode():
            struct.pack_into(fmt, data, start + offset, value)
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"{member} is not in {path}")


def corrupt_member_data(path: Path, member: str) -> None:
    """Scribble over the middle of a member's compressed bytes."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    middle = start + info.compress_size // 2
    data[middle : middle + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def import_paths(*paths):
    return images_import(find_image_sources(paths))


@pytest.fixture
def indexing_runs(eager_celery, django_capture_on_commit_callbacks):
    """Use as `with indexing_runs():` - what was queued meanwhile is indexed at its end,
    for real, in this process."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def with_peak_memory(run):
    """(run(), the peak of Python's allocations while it ran, in bytes)."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def titles() -> list[str]:
    return sorted(CatalogImage.objects.values_list("title", flat=True))


# --- Zip files --------------------------------------------------------------------------


def test_a_zip_bomb_member_is_refused_without_inflating_it(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"coffee.jpg": small("coffee.png")})
    add_zeros(archive, "huge.bmp", 200 * MB)
    assert archive.stat().st_size < 2 * MB
    report, peak = with_peak_memory(lambda: import_paths(archive))
    assert peak < 40 * MB, f"peak {peak / MB:.0f} MB"
    assert titles() == ["coffee"]
    reason = report.rejected[f"{archive}:huge.bmp"]
    assert "times its compressed size" in reason


def test_a_member_over_the_image_limit_is_refused_as_image_too_large(tmp_path, settings):
    settings.IMAGE_MAX_BYTES = 50_000
    big = encode(photo("astronaut.png"), "PNG")
    archive = write_zip(tmp_path / "a.zip", {"big.png": big, "cat.jpg": small("chelsea.png")})
    report = import_paths(archive)
    assert report.rejected == {f"{archive}:big.png": too_large_error(50_000).detail}
    assert titles() == ["cat"]


def test_a_header_that_understates_a_members_size_is_refused_as_corrupt(tmp_path):
    archive = write_zip(tmp_path / "lies.zip", {"cat.jpg": small("chelsea.png")})
    add_zeros(archive, "liar.bmp", 50 * MB)
    patch_central_entry(archive, "liar.bmp", 24, "<I", 1000)  # uncompressed size: 1000 bytes
    report = import_paths(archive)
    assert "corrupt" in report.rejected[f"{archive}:liar.bmp"]
    assert titles() == ["cat"]


def test_a_corrupt_member_is_reported_and_the_others_are_imported_and_queued(
    tmp_path, indexing_runs
):
    bmp = encode(photo("rocket.jpg"), "BMP")
    members = {"a.jpg": small("coffee.png"), "broken.bmp": bmp, "z.jpg": small("chelsea.png")}
    archive = write_zip(tmp_path / "c.zip", members)
    corrupt_member_data(archive, "broken.bmp")
    with indexing_runs():
        report = import_paths(archive)
    assert list(report.rejected) == [f"{archive}:broken.bmp"]
    assert "corrupt" in report.rejected[f"{archive}:broken.bmp"]
    assert titles() == ["a", "z"]
    assert set(CatalogImage.objects.values_list("status", flat=True)) == {"indexed"}


def test_an_encrypted_member_is_reported(tmp_path):
    archive = write_zip(
        tmp_path / "e.zip", {"secret.jpg": small("coffee.png"), "ok.jpg": small("chelsea.png")}
    )
    patch_central_entry(archive, "secret.jpg", 8, "<H", 0x1)  # flag bit 0: encrypted
    report = import_paths(archive)
    assert "encrypted" in report.rejected[f"{archive}:secret.jpg"]
    assert titles() == ["ok"]


def test_a_member_with_an_unknown_compression_method_is_reported(tmp_path):
    archive = write_zip(
        tmp_path / "m.zip", {"odd.jpg": small("coffee.png"), "ok.jpg": small("chelsea.png")}
    )
    patch_central_entry(archive, "odd.jpg", 10, "<H", 99)  # compression method 99
    report = import_paths(archive)
    assert "compression" in report.rejected[f"{archive}:odd.jpg"]
    assert titles() == ["ok"]


def test_a_file_named_zip_that_is_not_one_is_one_refusal(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip file")
    real = write_zip(tmp_path / "real.zip", {"cat.jpg": small("chelsea.png")})
    report = import_paths(fake, real)
    assert report.rejected == {str(fake): report.rejected[str(fake)]}
    assert "not a zip file" in report.rejected[str(fake)]
    assert titles() == ["cat"]


def test_a_zip_with_too_many_members_refuses_the_rest_in_one_line(tmp_path, settings):
    settings.ZIP_MAX_MEMBERS = 2
    names = ["coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "camera.png"]
    archive = write_zip(tmp_path / "many.zip", {f"{i}.jpg": small(n) for i, n in enumerate(names)})
    report = import_paths(archive)
    assert titles() == ["0", "1"]
    assert report.rejected == {str(archive): report.rejected[str(archive)]}
    assert "3 more" in report.rejected[str(archive)]


def test_a_zip_whose_directory_lists_too_many_entries_is_refused_unopened(
    tmp_path, settings, monkeypatch
):
    settings.ZIP_MAX_MEMBERS = 2  # so at most 20 entries
    members = {f"notes/{i}.txt": b"x" for i in range(25)} | {"cat.jpg": small("chelsea.png")}
    archive = write_zip(tmp_path / "wide.zip", members)
    opened = []
    original_init = zipfile.ZipFile.__init__
    monkeypatch.setattr(
        zipfile.ZipFile,
        "__init__",
        lambda self, *a, **k: opened.append(a) or original_init(self, *a, **k),
    )
    report = import_paths(archive)
    assert titles() == []
    assert "26 entries" in report.rejected[str(archive)]
    assert opened == []  # refused from the end record, before zipfile read the directory


def test_a_zip64_directory_count_is_read_too(tmp_path, settings):
    from catalog.sources import _directory_of

    path = tmp_path / "z64.zip"
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        for i in range(3):
            archive.writestr(f"{i}.txt", b"x")
    with path.open("rb") as file:
        assert _directory_of(file).entries == 3
    # Rewrite it as zipfile writes zip64 archives past 65,535 entries: 0xFFFF in the
    # end record, the count in a zip64 end record found through its locator.
    data = path.read_bytes()
    as_zip64(path, entries=70000, size=struct.unpack_from("<I", data, end_record(data) + 12)[0])
    with path.open("rb") as file:
        assert _directory_of(file).entries == 70000


# --- The zip's directory, read from its end record before zipfile reads it ----------------


def wide_zip(path: Path, entries: int = 26, **comments: bytes) -> Path:
    """`entries` - 1 text files and one picture; `comments` maps member names to comments."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(entries - 1):
            info = zipfile.ZipInfo(f"notes/{i}.txt")
            info.comment = comments.get(f"notes/{i}.txt", b"")
            archive.writestr(info, b"x")
        archive.writestr("cat.jpg", small("chelsea.png"))
    return path


def end_record(data: bytearray) -> int:
    return data.rfind(b"PK\x05\x06")


def patch_end_record(path: Path, **fields: int) -> None:
    """Overwrite fields of the end record: entries (both counts), size, offset."""
    data = bytearray(path.read_bytes())
    at = end_record(data)
    offsets = {"entries": [(8, "<H"), (10, "<H")], "size": [(12, "<I")], "offset": [(16, "<I")]}
    for name, value in fields.items():
        for offset, fmt in offsets[name]:
            struct.pack_into(fmt, data, at + offset, value)
    path.write_bytes(bytes(data))


def as_zip64(path: Path, *, entries: int, size: int, end_entries=0xFFFF, end_size=0xFFFFFFFF):
    """Rewrite a zip's end as zipfile writes zip64 archives: a zip64 end record, its locator,
    then the classic end record, whose fields zipfile ignores once it finds the zip64 one."""
    data = bytearray(path.read_bytes())
    end = end_record(data)
    directory_at = struct.unpack_from("<I", data, end + 16)[0]
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                        size, directory_at)  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, end_entries, end_entries, end_size,
                       directory_at, 0)  # fmt: skip
    path.write_bytes(bytes(data[:end]) + zip64 + locator + eocd)


@pytest.fixture
def zips_opened(monkeypatch) -> list:
    """The zip files zipfile was asked to read (and so read the directory of)."""
    opened = []
    original_init = zipfile.ZipFile.__init__

    def init(self, file, mode="r", *args, **kwargs):
        if mode == "r":
            opened.append(file)
        original_init(self, file, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "__init__", init)
    return opened


def assert_refused_unopened(report, archive: Path, opened: list, words: str) -> None:
    assert titles() == []
    assert list(report.rejected) == [str(archive)]
    assert words in report.rejected[str(archive)], report.rejected
    assert opened == []


def test_a_zip_whose_end_record_understates_its_entries_is_refused_unopened(
    tmp_path, settings, zips_opened
):
    # zipfile walks the directory by its size in bytes, whatever count the end record gives.
    settings.ZIP_MAX_MEMBERS = 2  # so at most 20 entries
    archive = wide_zip(tmp_path / "liar.zip")
    patch_end_record(archive, entries=1)
    report = import_paths(archive)
    assert_refused_unopened(report, archive, zips_opened, "more than the 20 entries")


def test_a_zip64_end_record_is_the_one_checked_whatever_the_classic_one_says(
    tmp_path, settings, zips_opened
):
    settings.ZIP_MAX_MEMBERS = 2
    archive = wide_zip(tmp_path / "z64.zip")
    size = struct.unpack_from("<I", archive.read_bytes(), end_record(archive.read_bytes()) + 12)[0]
    # zipfile reads the zip64 record whenever its locator is there, even when the classic
    # record's fields are not the 0xFFFF marks that say "see zip64".
    as_zip64(archive, entries=26, size=size, end_entries=1, end_size=46)
    with zipfile.ZipFile(archive) as opened:
        assert len(opened.infolist()) == 26
    zips_opened.clear()
    report = import_paths(archive)
    assert_refused_unopened(report, archive, zips_opened, "26 entries")


def test_an_end_record_with_the_end_signature_in_its_own_fields_is_still_read(
    tmp_path, settings, zips_opened
):
    # A directory offset of 0x06054B50 is written "PK\x05\x06": a reader searching for the
    # last signature finds it there, reads garbage, and gave up checking. zipfile does not
    # use that field to find the directory, so it still lists every entry.
    settings.ZIP_MAX_MEMBERS = 2
    archive = wide_zip(tmp_path / "sig.zip")
    patch_end_record(archive, offset=0x06054B50)
    with zipfile.ZipFile(archive) as opened:
        assert len(opened.infolist()) == 26
    zips_opened.clear()
    report = import_paths(archive)
    assert_refused_unopened(report, archive, zips_opened, "26 entries")


def test_a_zip_whose_directory_is_larger_than_its_entries_can_need_is_refused_unopened(
    tmp_path, settings, zips_opened
):
    # Few entries, each carrying 60 kB of comment: zipfile reads the whole directory at once.
    settings.ZIP_MAX_MEMBERS = 1  # 10 entries, so a directory of at most 10 x 256 bytes
    comments = {f"notes/{i}.txt": b"c" * 60_000 for i in range(3)}
    archive = wide_zip(tmp_path / "fat.zip", entries=4, **comments)
    report = import_paths(archive)
    assert_refused_unopened(report, archive, zips_opened, "a directory of 180,")
    assert "ZIP_MAX_MEMBERS" in report.rejected[str(archive)]


def test_a_zip64_directory_size_is_the_one_checked(tmp_path, settings, zips_opened):
    settings.ZIP_MAX_MEMBERS = 1
    comments = {f"notes/{i}.txt": b"c" * 60_000 for i in range(3)}
    archive = wide_zip(tmp_path / "fat64.zip", entries=4, **comments)
    size = struct.unpack_from("<I", archive.read_bytes(), end_record(archive.read_bytes()) + 12)[0]
    as_zip64(archive, entries=4, size=size, end_entries=4, end_size=100)
    report = import_paths(archive)
    assert_refused_unopened(report, archive, zips_opened, f"a directory of {size:,} bytes")


def test_a_zip_with_the_longest_comment_is_checked_all_the_same(tmp_path, settings):
    settings.ZIP_MAX_MEMBERS = 2
    archive = wide_zip(tmp_path / "commented.zip")
    with zipfile.ZipFile(archive, "a") as opened:
        opened.comment = b"c" * 65_535  # the end record is then 64 kB from the end
    patch_end_record(archive, entries=1)
    report = import_paths(archive)
    assert titles() == []
    assert "entries" in report.rejected[str(archive)]


def test_an_uploaded_zip_that_understates_its_entries_is_refused_the_same_way(
    tmp_path, settings, zips_opened
):
    # The admin bulk upload reads its zips through uploaded_sources.
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.ZIP_MAX_MEMBERS = 2
    archive = wide_zip(tmp_path / "liar.zip")
    patch_end_record(archive, entries=1)
    upload = SimpleUploadedFile("liar.zip", archive.read_bytes())
    report = images_import(uploaded_sources([upload]))
    assert titles() == []
    assert "more than the 20 entries" in report.rejected["liar.zip"]
    assert zips_opened == []


def test_a_directory_of_many_tiny_entries_is_refused_within_bounded_memory(tmp_path, settings):
    # 200,000 entries of 47 bytes (9.4 MB) declared as one: zipfile would build an object
    # for each (about 100 MB) before anything could count them.
    settings.ZIP_MAX_MEMBERS = 10_000  # the default: 100,000 entries, 25.6 MB of directory
    versions, flags, method, time, date = (20, 20), 0, 0, 0, 0
    crc, sizes, name_length, no_extra, no_comment, disk, attributes = 0, (0, 0), 1, 0, 0, 0, 0
    header = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *versions, flags, method, time, date,
                         crc, *sizes, name_length, no_extra, no_comment, disk, attributes,
                         0, 0)  # fmt: skip
    entry = header + b"a"
    directory = entry * 200_000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), 0, 0)
    archive = tmp_path / "tiny.zip"
    archive.write_bytes(directory + end)
    report, peak = with_peak_memory(lambda: import_paths(archive))
    assert "more than the 100000 entries" in report.rejected[str(archive)]
    assert peak < 5 * MB, f"peak {peak / MB:.0f} MB"


def test_an_archive_past_its_inflated_total_refuses_the_remaining_members(tmp_path, settings):
    pictures = [small(n, "BMP") for n in ("coffee.png", "chelsea.png", "rocket.jpg")]
    settings.ZIP_MAX_TOTAL_BYTES = len(pictures[0]) * 2 + 10
    archive = write_zip(tmp_path / "t.zip", {f"{i}.bmp": p for i, p in enumerate(pictures)})
    report = import_paths(archive)
    assert titles() == ["0", "1"]
    assert "ZIP_MAX_TOTAL_BYTES" in report.rejected[f"{archive}:2.bmp"]


def test_names_inside_a_zip_are_only_ever_titles(tmp_path):
    members = {
        "../../escape.jpg": small("coffee.png"),
        "/absolute/root.jpg": small("chelsea.png"),
        "windows\\style\\back.jpg": small("rocket.jpg"),
        "caf?.jpg": small("brick.png"),
        "__MACOSX/fork.jpg": small("camera.png"),
        "photos/.hidden.jpg": small("moon.png"),
    }
    archive = write_zip(tmp_path / "names.zip", members)
    data = archive.read_bytes().replace(b"caf?.jpg", b"caf\xe9.jpg")  # a legacy, non-UTF-8 name
    archive.write_bytes(data)
    report = import_paths(archive)
    assert report.rejected == {}
    assert titles() == ["back", "caf\u0398", "escape", "root"]  # 0xE9 is Θ in cp437
    assert not (tmp_path.parent / "escape.jpg").exists()
    assert not Path("/absolute").exists()


def test_a_zip_inside_a_zip_is_reported_not_opened(tmp_path):
    inner = write_zip(tmp_path / "inner.zip", {"cat.jpg": small("chelsea.png")})
    outer = write_zip(
        tmp_path / "outer.zip", {"inner.zip": inner.read_bytes(), "a.jpg": small("coffee.png")}
    )
    report = images_import(find_image_sources([outer]))
    assert titles() == ["a"]
    assert "zip file inside a zip file" in report.rejected[f"{outer}:inner.zip"]


def test_an_uploaded_zip_is_read_member_by_member(tmp_path, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    archive = write_zip(tmp_path / "up.zip", {"cat.jpg": small("chelsea.png")})
    add_zeros(archive, "huge.bmp", 100 * MB)
    corrupt = write_zip(tmp_path / "corrupt.zip", {"x.bmp": encode(photo("rocket.jpg"), "BMP")})
    corrupt_member_data(corrupt, "x.bmp")
    uploads = [
        SimpleUploadedFile("up.zip", archive.read_bytes()),
        SimpleUploadedFile("corrupt.zip", corrupt.read_bytes()),
        SimpleUploadedFile("coffee.jpg", small("coffee.png")),
    ]
    report, peak = with_peak_memory(lambda: images_import(uploaded_sources(uploads)))
    assert peak < 40 * MB, f"peak {peak / MB:.0f} MB"
    assert sorted(report.rejected) == ["corrupt.zip:x.bmp", "up.zip:huge.bmp"]
    assert titles() == ["cat", "coffee"]


def test_rows_created_before_an_interruption_are_still_queued(tmp_path, indexing_runs):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("coffee.png", "chelsea.png", "rocket.jpg"):
        (folder / f"{Path(name).stem}.jpg").write_bytes(small(name))
    seen = []

    def press_ctrl_c_after_two(source):
        seen.append(source)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with indexing_runs(), pytest.raises(KeyboardInterrupt):
        images_import(find_image_sources([folder]), on_progress=press_ctrl_c_after_two)
    assert titles() == ["chelsea", "coffee"]
    assert set(CatalogImage.objects.values_list("status", flat=True)) == {"indexed"}


# --- Folders -----------------------------------------------------------------------------


def test_an_unreadable_file_is_reported_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(small("chelsea.png"))
    locked = folder / "locked.jpg"
    if os.geteuid() == 0:  # root reads any file mode; this kernel file refuses even root
        locked.symlink_to("/proc/sys/vm/drop_caches")
    else:
        locked.write_bytes(small("coffee.png"))
        locked.chmod(0)
    report = import_paths(folder)
    assert "Permission denied" in report.rejected[str(locked)]
    assert titles() == ["cat"]


def test_a_file_that_vanishes_after_listing_is_reported(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(small("chelsea.png"))
    (folder / "gone.jpg").write_bytes(small("coffee.png"))
    sources = find_image_sources([folder])
    (folder / "gone.jpg").unlink()
    report = images_import(sources)
    assert "No such file" in report.rejected[str(folder / "gone.jpg")]
    assert titles() == ["cat"]


def test_symlink_loops_in_a_folder_neither_hang_nor_count_twice(tmp_path):
    folder = tmp_path / "pictures"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "cat.jpg").write_bytes(small("chelsea.png"))
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    report = import_paths(folder)
    assert titles() == ["cat"]
    assert len(report.created) == 1
    assert "link" in report.rejected[str(folder / "loop.jpg")]


def test_a_huge_file_is_refused_without_being_read_whole(tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(300 * MB)  # sparse: takes no disk
    report, peak = with_peak_memory(lambda: import_paths(huge))
    assert peak < 40 * MB, f"peak {peak / MB:.0f} MB"
    assert report.rejected == {str(huge): too_large_error(10 * MB).detail}


def test_non_utf8_file_names_are_imported_with_a_readable_title(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9 au lait.jpg"), "wb") as file:
        file.write(small("coffee.png"))
    broken = os.path.join(os.fsencode(folder), b"bad\xff.jpg")
    with open(broken, "wb") as file:
        file.write(b"not a picture")
    report = import_paths(folder)
    assert titles() == ["caf\ufffd au lait"]
    [(name, _)] = report.rejected.items()
    assert name.encode("utf-8").endswith("bad\ufffd.jpg".encode())


def test_the_same_picture_as_a_file_and_in_a_zip_is_one_image(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(small("chelsea.png"))
    (folder / "copy of cat.jpg").write_bytes(small("chelsea.png"))
    write_zip(folder / "cats.zip", {"cat again.jpg": small("chelsea.png")})
    report = import_paths(folder)
    assert CatalogImage.objects.count() == 1
    assert (len(report.created), len(report.duplicates)) == (1, 2)
    assert report.image_ids == [report.created[0]]


# --- Waiting -------------------------------------------------------------------------------


def test_waiting_counts_each_image_once(tmp_path):
    (tmp_path / "a.jpg").write_bytes(small("coffee.png"))
    (tmp_path / "b.jpg").write_bytes(small("chelsea.png"))
    report = import_paths(tmp_path / "a.jpg", tmp_path / "b.jpg")
    CatalogImage.objects.update(status="indexed")
    a, b = report.created
    started = time.monotonic()
    counts = wait_until_settled([a, b, a, a], timeout=5, poll_seconds=0.05)
    assert time.monotonic() - started < 1
    assert counts == {"indexed": 2}


def test_waiting_does_not_wait_for_an_image_deleted_meanwhile(tmp_path):
    (tmp_path / "a.jpg").write_bytes(small("coffee.png"))
    (tmp_path / "b.jpg").write_bytes(small("chelsea.png"))
    report = import_paths(tmp_path / "a.jpg", tmp_path / "b.jpg")
    a, b = report.created
    CatalogImage.objects.filter(pk=a).update(status="indexed")
    CatalogImage.objects.filter(pk=b).delete()
    started = time.monotonic()
    assert wait_until_settled([a, b], timeout=5, poll_seconds=0.05) == {"indexed": 1}
    assert time.monotonic() - started < 1


def test_a_big_import_queues_each_batch_as_soon_as_it_is_staged(
    tmp_path, settings, django_capture_on_commit_callbacks
):
    """The worker starts on the first batch while the rest are still being staged."""
    from django.db import connection

    settings.INDEX_BATCH_SIZE = 2
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "brick.png"]
    for name in names:
        (tmp_path / f"{name}.jpg").write_bytes(small(name))
    with django_capture_on_commit_callbacks(execute=True) as sends:
        before = len(connection.run_on_commit)
        batches_when_staged = []  # sends waiting for the (test's) transaction to commit
        report = images_import(
            find_image_sources([tmp_path]),
            on_progress=lambda source: batches_when_staged.append(
                len(connection.run_on_commit) - before
            ),
        )
    assert batches_when_staged == [0, 1, 1, 2, 2]
    assert len(sends) == 3  # 2 + 2 + the last one
    queued = CatalogImage.objects.filter(pk__in=report.image_ids).exclude(queued_at=None)
    assert queued.count() == 5
