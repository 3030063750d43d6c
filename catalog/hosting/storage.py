"""Images hosted by a Django storage: the local disk, or any django-storages backend."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

from catalog.hosting.base import HostedImage, ImageHost, ImageHostError, make_thumbnail


class StorageImageHost(ImageHost):
    """Originals and WebP thumbnails side by side, at paths derived from the bytes' hash,
    so publishing the same image again writes the same two objects."""

    def __init__(self, name: str, storage_alias: str, thumbnail_size: int):
        self.name = name
        self.storage_alias = storage_alias
        self.thumbnail_size = thumbnail_size

    @property
    def storage(self) -> Storage:
        # Looked up on use: Django rebuilds its storages when STORAGES or MEDIA_ROOT change.
        return storages[self.storage_alias]

    def publish(self, *, image_id: int, sha256: str, data: bytes, extension: str) -> HostedImage:
        key = f"catalog/{sha256[:2]}/{sha256}.{extension}"
        thumbnail_key = _thumbnail_key(key)
        try:
            thumbnail = make_thumbnail(data, self.thumbnail_size)
            self._put(key, data)
            self._put(thumbnail_key, thumbnail)
            return HostedImage(
                key=key, url=self.storage.url(key), thumbnail_url=self.storage.url(thumbnail_key)
            )
        except Exception as exc:  # each backend has its own errors (OSError, botocore, ...)
            raise ImageHostError(f"Could not publish to {self.name} storage: {exc}") from exc

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
        # Content-addressed: an existing object already holds these bytes. Saving again
        # would make FileSystemStorage invent a second name.
        if not self.storage.exists(name):
            saved = self.storage.save(name, ContentFile(data))
            if saved != name:
                raise ImageHostError(f"The storage saved {name} as {saved}.")


def _thumbnail_key(key: str) -> str:
    return key.rsplit(".", 1)[0] + ".thumb.webp"
