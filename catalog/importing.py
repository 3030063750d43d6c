"""Bulk import of pictures from files, folders and zip files (used by import_images)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile

from catalog import services
from catalog.models import CatalogImage
from search.imaging import ImageRejected

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageSource:
    name: str  # shown in reports: a path, or "archive.zip:member"
    read: Callable[[], bytes]
    title: str = ""  # empty: derived from the file name
    tags: tuple[str, ...] = ()


@dataclass
class ImportReport:
    created: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[int]:
        return self.created + self.duplicates


def find_image_sources(paths: Iterable[str | Path]) -> list[ImageSource]:
    """Image files named directly, found in folders (recursively) or inside zip files."""
    sources: list[ImageSource] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            sources += [_file_source(p) for p in files if _looks_like_image(p.name)]
            sources += [s for p in files if p.suffix.lower() == ".zip" for s in _zip_sources(p)]
        elif path.suffix.lower() == ".zip":
            sources += _zip_sources(path)
        elif path.is_file():
            sources.append(_file_source(path))
        else:
            raise FileNotFoundError(f"{path} does not exist.")
    return sources


def uploaded_sources(files: Iterable[UploadedFile]) -> list[ImageSource]:
    """Sources from files uploaded in one form: pictures, and pictures inside zip files."""
    sources: list[ImageSource] = []
    for upload in files:
        data = upload.read()
        if upload.name.lower().endswith(".zip"):
            try:
                sources += _zip_sources_in_memory(upload.name, data)
            except zipfile.BadZipFile:
                sources.append(ImageSource(name=upload.name, read=_raise_bad_zip))
        else:
            sources.append(ImageSource(name=upload.name, read=lambda data=data: data))
    return sources


def _zip_sources_in_memory(name: str, data: bytes) -> list[ImageSource]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        contents = {
            member.filename: archive.read(member)
            for member in archive.infolist()
            if not member.is_dir() and _looks_like_image(member.filename)
        }
    return [
        ImageSource(name=f"{name}:{filename}", read=lambda data=data: data)
        for filename, data in contents.items()
    ]


def _raise_bad_zip() -> bytes:
    raise OSError("not a valid zip file")


def _looks_like_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(name).name.startswith(".")


def _file_source(path: Path) -> ImageSource:
    return ImageSource(name=str(path), read=path.read_bytes)


def _zip_sources(path: Path) -> Iterator[ImageSource]:
    with zipfile.ZipFile(path) as archive:
        members = [
            m for m in archive.infolist() if not m.is_dir() and _looks_like_image(m.filename)
        ]
    for member in members:
        yield ImageSource(
            name=f"{path}:{member.filename}",
            read=lambda member=member: _read_member(path, member.filename),
        )


def _read_member(path: Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(member)


def images_import(
    sources: Iterable[ImageSource],
    *,
    tags: Iterable[str] = (),
    on_progress: Callable[[ImageSource], None] | None = None,
) -> ImportReport:
    """Create catalog rows for `sources` and queue their indexing in embedding batches.

    `tags` go on every image, in addition to each source's own.
    """
    report = ImportReport()
    tags = tuple(tags)
    for source in sources:
        try:
            data = source.read()
            file = ContentFile(data, name=Path(source.name.split(":")[-1]).name)
            image, created = services.image_create(
                file=file, title=source.title, tags=tags + source.tags, enqueue=False
            )
        except ImageRejected as exc:
            report.rejected[source.name] = exc.detail
        except OSError as exc:
            report.rejected[source.name] = f"could not be read: {exc}"
        else:
            (report.created if created else report.duplicates).append(image.pk)
        if on_progress:
            on_progress(source)
    # Duplicates are queued too: indexing is idempotent, and one may have failed before.
    services.enqueue_indexing(report.image_ids)
    return report


def wait_until_settled(
    image_ids: list[int],
    *,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, int]:
    """Block until every image is indexed or failed (or `timeout`); returns status counts."""
    settled_states = [CatalogImage.Status.INDEXED, CatalogImage.Status.FAILED]
    deadline = time.monotonic() + timeout
    while True:
        rows = CatalogImage.objects.filter(pk__in=image_ids)
        settled = rows.filter(status__in=settled_states).count()
        if on_progress:
            on_progress(settled)
        if settled >= len(image_ids) or time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for status in rows.values_list("status", flat=True):
                counts[status] = counts.get(status, 0) + 1
            return counts
        time.sleep(poll_seconds)
