"""The configured image host (IMAGE_HOST), one instance per process and configuration."""

from __future__ import annotations

import threading

from catalog.hosting.base import HostedImage, ImageHost, ImageHostError, make_thumbnail

__all__ = [
    "HOST_NAMES", "HostedImage", "ImageHost", "ImageHostError", "get_image_host", "make_thumbnail",
]  # fmt: skip

HOST_NAMES = ("local", "storages", "cloudinary")  # IMAGE_HOST's choices

_hosts: dict[tuple, ImageHost] = {}
_lock = threading.Lock()


def get_image_host(name: str | None = None) -> ImageHost:
    """The host called `name` (default: IMAGE_HOST); deleting uses the one that published."""
    from django.conf import settings

    name = name or settings.IMAGE_HOST
    key = (name, settings.THUMBNAIL_SIZE, settings.CLOUDINARY_URL, settings.CLOUDINARY_FOLDER)
    with _lock:
        if key not in _hosts:
            _hosts[key] = _build(name)
        return _hosts[key]


def _build(name: str) -> ImageHost:
    from django.conf import settings

    from catalog.hosting.storage import StorageImageHost

    if name == "local":
        return StorageImageHost("local", "default", settings.THUMBNAIL_SIZE)
    if name == "storages":
        return StorageImageHost("storages", "images", settings.THUMBNAIL_SIZE)
    if name == "cloudinary":
        from catalog.hosting.cloudinary import CloudinaryImageHost

        return CloudinaryImageHost(
            url=settings.CLOUDINARY_URL,
            folder=settings.CLOUDINARY_FOLDER,
            thumbnail_size=settings.THUMBNAIL_SIZE,
        )
    raise ImageHostError(f"Unknown IMAGE_HOST {name!r}.")
