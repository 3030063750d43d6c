"""Reading pictures from files, folders and zip files (import_images, admin bulk uploads,
the evaluation tool), and the limits that keep a hostile one harmless.

Nothing here trusts what it is given: files are read with a size cap, zip members one at a
time and inflated with caps (size, total, ratio, count), and names found in folders or zips
are only ever shown or used as titles, never as paths to write to. A source that cannot be
read raises ImageRejected (or OSError) when read, for the caller to report. Nothing here
touches the catalog: catalog.importing creates images from these sources.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from search.imaging import ImageRejected, read_limited, too_large_error

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".mpo",
}  # fmt: skip
# Below this, a high compression ratio is a plain white picture, not a bomb.
RATIO_CHECK_MIN_BYTES = 1024 * 1024
_CHUNK = 256 * 1024
# A zip's directory may list this many entries per picture read (folders, other files)
# before the zip is refused unopened: zipfile holds an object per entry once it opens one.
ENTRIES_PER_MEMBER = 10
# ...and take this many bytes per entry it may list: 46 fixed bytes, a name, extra fields
# and a comment (zip tools write 60 to 200 bytes an entry). zipfile reads the directory
# whole, by the byte size the end record gives, whatever entry count it declares.
DIRECTORY_BYTES_PER_ENTRY = 256
_DIRECTORY_CHUNK = 1024 * 1024
# A central directory entry: its signature, then the lengths of what follows it.
_CENTRAL_ENTRY = struct.Struct("<4s24xHHH12x")


@dataclass(frozen=True)
class ImageSource:
    name: str  # shown in reports: a path, or "archive.zip:member"
    read: Callable[[], bytes]  # raises ImageRejected or OSError when it cannot
    filename: str = ""  # the last part of the name, for the title; never a path to write to
    title: str = ""  # empty: derived from the file name
    tags: tuple[str, ...] = ()


def find_image_sources(paths: Iterable[str | Path]) -> list[ImageSource]:
    """Image files named directly, found in folders (recursively) or inside zip files."""
    sources: list[ImageSource] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            sources += _folder_sources(path)
        elif path.suffix.lower() == ".zip" and path.is_file():
            sources += _zip_sources(display_name(str(path)), path)
        elif path.is_file():
            sources.append(_file_source(path))
        else:
            raise FileNotFoundError(f"{display_name(str(path))} does not exist.")
    return sources


def uploaded_sources(files: Iterable[UploadedFile]) -> list[ImageSource]:
    """Sources from files uploaded in one form: pictures, and pictures inside zip files.

    Nothing is read here; each source reads its own bytes, capped, when it is imported.
    """
    sources: list[ImageSource] = []
    for upload in files:
        name = display_name(upload.name or "upload")
        if name.lower().endswith(".zip"):
            sources += _zip_sources(name, upload.file)
        else:
            sources.append(
                ImageSource(name=name, read=lambda f=upload.file: _read_capped(f), filename=name)
            )
    return sources


def display_name(name: str) -> str:
    """`name` as text that can be printed and stored: bytes that are not UTF-8 (file names
    from old cameras and zip tools) become U+FFFD instead of failing later."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def base_name(name: str) -> str:
    """The last part of a path written with / or \\ (zip tools on Windows write both)."""
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _looks_like_image(name: str) -> bool:
    base = base_name(name)
    return Path(base).suffix.lower() in IMAGE_SUFFIXES and not base.startswith(".")


def _skipped(name: str) -> bool:
    """Folders of metadata that zip tools add (macOS resource forks) and hidden files."""
    parts = name.replace("\\", "/").split("/")
    hidden = any(part.startswith(".") and part not in (".", "..") for part in parts)
    return hidden or "__MACOSX" in parts


def _refused(name: str, error: ImageRejected) -> ImageSource:
    def read() -> bytes:
        raise error

    return ImageSource(name=name, read=read)


# --- Files and folders ---------------------------------------------------------------------


def _folder_sources(folder: Path) -> list[ImageSource]:
    # os.walk does not follow links to folders, so a link back up cannot loop.
    sources: list[ImageSource] = []
    unlisted: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=unlisted.append):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for filename in sorted(files):
            path = Path(root) / filename
            if _skipped(filename):
                continue
            if path.suffix.lower() == ".zip" and path.is_file():
                sources += _zip_sources(display_name(str(path)), path)
            elif _looks_like_image(filename):
                sources.append(_file_source(path))
    for error in unlisted:
        sources.append(
            _refused(
                display_name(str(error.filename)),
                ImageRejected("unreadable_folder", f"could not be listed ({error.strerror})."),
            )
        )
    return sources


def _file_source(path: Path) -> ImageSource:
    name = display_name(str(path))
    if not path.is_file():  # a broken link, a link that loops, a device...
        error = ImageRejected(
            "not_a_file", "is a broken or looping link, or not a regular file; skipped."
        )
        return _refused(name, error)
    return ImageSource(name=name, read=lambda: _read_file(path), filename=base_name(name))


def _read_file(path: Path) -> bytes:
    with path.open("rb") as file:
        return _read_capped(file)


def _read_capped(file: IO[bytes]) -> bytes:
    """At most IMAGE_MAX_BYTES bytes, or the product's image_too_large refusal: a 5 GB file
    named .jpg is never held in memory."""
    return read_limited(file, max_bytes=settings.IMAGE_MAX_BYTES)


# --- Zip files ---------------------------------------------------------------------------


class _Archive:
    """One zip file, opened when its first member is read and closed after its last, so a
    folder of many zips does not hold a file descriptor for each."""

    def __init__(self, name: str, fileobj_or_path: IO[bytes] | Path):
        self.name = name
        self._source = fileobj_or_path
        self._zip: zipfile.ZipFile | None = None
        self._left = 0
        self.inflated = 0  # bytes actually inflated so far, over all members

    def member_source(self, info: zipfile.ZipInfo) -> ImageSource:
        self._left += 1
        name = f"{self.name}:{display_name(info.filename)}"
        return ImageSource(
            name=name,
            read=lambda: self._read(info),
            filename=base_name(display_name(info.filename)),
        )

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        try:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self._source)
            return self._inflate(self._zip, info)
        except ImageRejected:
            raise
        except NotImplementedError as exc:  # before RuntimeError, its parent
            raise ImageRejected(
                "zip_member_unsupported",
                "uses a compression method that is not supported; zip it again with the "
                "standard (deflate) compression.",
            ) from exc
        except RuntimeError as exc:  # zipfile's way of saying "encrypted"
            raise ImageRejected(
                "zip_member_encrypted",
                "is encrypted; zip it again without a password and upload that.",
            ) from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise ImageRejected(
                "zip_member_corrupt",
                f"is corrupt inside the zip file ({exc}); make the zip file again.",
            ) from exc
        finally:
            self._left -= 1
            if self._left == 0:
                self.close()

    def _inflate(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        limit = settings.IMAGE_MAX_BYTES
        total_limit = settings.ZIP_MAX_TOTAL_BYTES
        if self.inflated >= total_limit:
            raise _total_error(total_limit)
        # The header's sizes are checked first, to refuse without inflating anything...
        _check_ratio(info.file_size, info.compress_size)
        if info.file_size > limit:
            raise too_large_error(limit)
        # ...and the bytes actually inflated are counted too: headers can lie.
        chunks, size = [], 0
        with archive.open(info) as member:
            while chunk := member.read(min(_CHUNK, limit + 1 - size)):
                size += len(chunk)
                self.inflated += len(chunk)
                if size > limit:
                    raise too_large_error(limit)
                if self.inflated > total_limit:
                    raise _total_error(total_limit)
                _check_ratio(size, info.compress_size)
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()  # a file object passed in (an upload) stays open
            self._zip = None


def _check_ratio(inflated: int, compressed: int) -> None:
    ratio = settings.ZIP_MAX_RATIO
    if inflated > RATIO_CHECK_MIN_BYTES and inflated > ratio * max(compressed, 1):
        raise ImageRejected(
            "zip_member_ratio",
            f"inflates to more than {ratio} times its compressed size (ZIP_MAX_RATIO), which "
            "is how zip bombs look; add the picture itself instead of a zip.",
        )


def _total_error(total_limit: int) -> ImageRejected:
    return ImageRejected(
        "zip_too_large",
        f"was not read: the zip file inflates to more than {total_limit / 1_048_576:.0f} MB "
        "(ZIP_MAX_TOTAL_BYTES); split it into smaller zip files.",
    )


@dataclass(frozen=True)
class _Directory:
    entries: int  # as the end record declares them
    start: int  # where zipfile reads it from
    size: int  # in bytes, as the end record gives it: how far zipfile reads and walks


def _directory_of(file: IO[bytes]) -> _Directory | None:
    """The zip's central directory as zipfile will read it, found from the end record alone
    (zip64 too); None when there is none, and zipfile will refuse the file.

    zipfile's own end-record reader finds it, so what is checked is what zipfile then acts
    on: a reader of our own disagreed with it on crafted files (an end record whose fields
    hold its own signature; a zip64 record behind a classic one that does not point to it).
    """
    try:
        end = zipfile._EndRecData(file)
    except (OSError, zipfile.BadZipFile):
        return None
    finally:
        file.seek(0)
    if not end:
        return None
    size = end[zipfile._ECD_SIZE]
    start = end[zipfile._ECD_LOCATION] - size  # as zipfile computes it, prepended data or not
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0:
        return None
    return _Directory(entries=end[zipfile._ECD_ENTRIES_TOTAL], start=start, size=size)


def _directory_entries(file: IO[bytes], directory: _Directory, *, stop_after: int) -> int:
    """How many entries zipfile would build from `directory`: it walks its bytes, whatever
    count the end record declares. Counted a chunk at a time without building anything,
    and only until past `stop_after`."""
    count = at = window_at = 0
    window = b""
    while at < directory.size and count <= stop_after:
        if at + _CENTRAL_ENTRY.size > window_at + len(window):
            file.seek(directory.start + at)
            window, window_at = file.read(min(_DIRECTORY_CHUNK, directory.size - at)), at
        header = window[at - window_at : at - window_at + _CENTRAL_ENTRY.size]
        if len(header) < _CENTRAL_ENTRY.size or header[:4] != b"PK\x01\x02":
            break  # where zipfile stops too, refusing the zip
        _, name, extra, comment = _CENTRAL_ENTRY.unpack(header)
        at += _CENTRAL_ENTRY.size + name + extra + comment
        count += 1
    file.seek(0)
    return count


def _directory_refusal(fileobj_or_path: IO[bytes] | Path) -> ImageRejected | None:
    """Why the zip is refused before zipfile reads its directory (which builds an object per
    entry, and holds the whole directory at once), or None."""
    max_entries = settings.ZIP_MAX_MEMBERS * ENTRIES_PER_MEMBER
    max_bytes = max_entries * DIRECTORY_BYTES_PER_ENTRY
    after = "nothing in it was imported: split it into smaller zip files."
    with contextlib.ExitStack() as stack:
        file = fileobj_or_path
        if isinstance(file, Path):
            file = stack.enter_context(file.open("rb"))
        directory = _directory_of(file)
        if directory is None:
            return None
        if directory.entries > max_entries:
            detail = (
                f"lists {directory.entries} entries, more than the {max_entries} a zip file "
                f"may hold (10 x ZIP_MAX_MEMBERS); {after}"
            )
        elif directory.size > max_bytes:
            detail = (
                f"has a directory of {directory.size:,} bytes, more than the "
                f"{max_bytes:,} that the {max_entries} entries a zip file may hold can take "
                f"(10 x ZIP_MAX_MEMBERS entries of {DIRECTORY_BYTES_PER_ENTRY} bytes); {after}"
            )
        elif _directory_entries(file, directory, stop_after=max_entries) > max_entries:
            detail = (
                f"lists more than the {max_entries} entries a zip file may hold "
                f"(10 x ZIP_MAX_MEMBERS), whatever its end record declares; {after}"
            )
        else:
            return None
    return ImageRejected("zip_too_many_members", detail)


def _zip_sources(name: str, fileobj_or_path: IO[bytes] | Path) -> list[ImageSource]:
    """One source per picture in the zip, read later, one at a time; a zip that cannot be
    opened, a zip inside it and the members past ZIP_MAX_MEMBERS are each one refusal."""
    try:
        refusal = _directory_refusal(fileobj_or_path)
        if refusal is not None:
            return [_refused(name, refusal)]
        with zipfile.ZipFile(fileobj_or_path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        detail = "is not a zip file, or a damaged one; make the zip file again."
        if isinstance(exc, OSError):  # unreadable or gone, rather than not a zip
            detail = f"could not be read ({exc.strerror or exc})."
        return [_refused(name, ImageRejected("not_a_zip", detail))]
    opened = _Archive(name, fileobj_or_path)
    sources: list[ImageSource] = []
    pictures = 0
    max_members = settings.ZIP_MAX_MEMBERS
    for info in members:
        if info.is_dir() or _skipped(info.filename):
            continue
        if info.filename.lower().endswith(".zip"):
            sources.append(
                _refused(
                    f"{name}:{display_name(info.filename)}",
                    ImageRejected(
                        "nested_zip",
                        "is a zip file inside a zip file, which is not opened; add it on its own.",
                    ),
                )
            )
        elif _looks_like_image(info.filename):
            pictures += 1
            if pictures <= max_members:
                sources.append(opened.member_source(info))
    if pictures > max_members:
        extra = pictures - max_members
        sources.append(
            _refused(
                name,
                ImageRejected(
                    "zip_too_many_members",
                    f"holds {extra} more pictures than the {max_members} read from one zip "
                    "file (ZIP_MAX_MEMBERS); they were not imported: split it into smaller "
                    "zip files.",
                ),
            )
        )
    return sources
