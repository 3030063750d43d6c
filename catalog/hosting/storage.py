"""Images hosted by a Django storage: the local disk, or any django-storages backend."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from catalog.hosting.base import HostedImage, ImageHost, ImageHostError, make_thumbnail

if TYPE_CHECKING:
    from PIL import Image

# `catalog/<sha[:2]>/<sha>-<catalog id>.<ext>`, or `catalog/<sha[:2]>/<sha>.<ext>` as keys
# were made before each row got its own. Checked with fullmatch, so nothing may follow.
_KEY = re.compile(
    r"catalog/(?P<folder>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})(?:-[1-9][0-9]{0,18})?\.[a-z0-9]{2,5}"
)


class StorageImageHost(ImageHost):
    """Originals and WebP thumbnails side by side, at paths of their own per catalog row.

    The key holds the catalog id as well as the bytes' hash: a row deleted and the same bytes
    uploaded again as a new row get two keys, so the first row's late clean-up can never
    remove the files the second one uses. Publishing one row again writes the same two keys.
    """

    def __init__(self, name: str, storage_alias: str, thumbnail_size: int):
        self.name = name
        self.storage_alias = storage_alias
        self.thumbnail_size = thumbnail_size

    @property
    def storage(self) -> Storage:
        # Looked up on use: Django rebuilds its storages when STORAGES or MEDIA_ROOT change.
        return storages[self.storage_alias]

    def publish(
        self,
        *,
        image_id: int,
        sha256: str,
        data: bytes,
        extension: str,
        preview: Image.Image | None = None,
    ) -> HostedImage:
        key = f"catalog/{sha256[:2]}/{sha256}-{image_id}.{extension}"
        thumbnail_key = _thumbnail_key(key)
        try:
            thumbnail = make_thumbnail(data, self.thumbnail_size, preview=preview)
            self._put(key, data)
            self._put(thumbnail_key, thumbnail)
            return HostedImage(
                key=key, url=self.storage.url(key), thumbnail_url=self.storage.url(thumbnail_key)
            )
        except Exception as exc:  # each backend has its own errors (OSError, botocore, ...)
            raise ImageHostError(f"Could not publish to {self.name} storage: {exc}") from exc

    def owns(self, key: str) -> bool:
        shape = _KEY.fullmatch(key)
        return shape is not None and shape["sha"].startswith(shape["folder"])

    def delete(self, key: str) -> None:
        try:
            for name in (key, _thumbnail_key(key)):
                self.storage.delete(name)
        except Exception as exc:
            raise ImageHostError(f"Could not delete from {self.name} storage: {exc}") from exc

    def read(self, key: str) -> bytes:
        try:
            with self.storage.open(key, "rb") as handle:
                return handle.read()
        except Exception as exc:
            raise ImageHostError(f"Could not read {key} from {self.name} storage: {exc}") from exc

    def _put(self, name: str, data: bytes) -> None:
        storage = self.storage
        if isinstance(storage, FileSystemStorage):
            if not _file_holds(Path(storage.path(name)), data):
                _write_atomically(storage, name, data)
            return
        # An object store's PUT is atomic: an object there is whole, and one of the right
        # size at this row's key holds these bytes. A different one (a legacy shared key,
        # new thumbnail settings) is replaced.
        if storage.exists(name):
            if storage.size(name) == len(data):
                return
            # Storages set not to overwrite would invent a second name instead.
            storage.delete(name)
        saved = storage.save(name, ContentFile(data))
        if saved != name:
            raise ImageHostError(f"The storage saved {name} as {saved}.")


def _file_holds(path: Path, data: bytes) -> bool:
    """True when the file at `path` already holds exactly `data` (a local read is cheap, and
    a file half written by an older version or a full disk must not be skipped)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def _write_atomically(storage: FileSystemStorage, name: str, data: bytes) -> None:
    """Write a temporary file in the same folder, then rename it over `name`: readers, and
    later publishes, see the old file or the whole new one, never a part."""
    path = Path(storage.path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        # mkstemp makes the file private; the web server must read it like any upload.
        os.chmod(temporary, storage.file_permissions_mode or 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _thumbnail_key(key: str) -> str:
    return key.rsplit(".", 1)[0] + ".thumb.webp"
