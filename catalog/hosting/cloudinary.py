"""Images hosted on Cloudinary, through the official SDK's Upload API only.

The Admin API is rate-limited, so nothing on a request or task path uses it. Thumbnails
are delivery URLs with transformations (fill crop, fixed size, automatic format and
quality), which Cloudinary renders and caches on first view: nothing extra is uploaded.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlparse

from catalog.hosting.base import HostedImage, ImageHost, ImageHostError

if TYPE_CHECKING:
    from PIL import Image

_CATALOG_ID = re.compile(r"[1-9][0-9]{0,18}")
_BOOLEAN_OPTIONS = {"secure", "private_cdn", "cdn_subdomain", "secure_cdn_subdomain"}


def cloudinary_options(url: str) -> dict:
    """SDK configuration from `cloudinary://key:secret@cloud[?option=value&...]`."""
    parsed = urlparse(url)
    options: dict = {
        "cloud_name": parsed.hostname,
        "api_key": parsed.username,
        "api_secret": parsed.password,
        "secure": True,
    }
    for key, value in parse_qsl(parsed.query):
        options[key] = value.lower() == "true" if key in _BOOLEAN_OPTIONS else value
    return options


class CloudinaryImageHost(ImageHost):
    name = "cloudinary"

    def __init__(self, *, url: str, folder: str, thumbnail_size: int, timeout: float = 30.0):
        import cloudinary

        self.options = cloudinary_options(url)
        cloudinary.config(**self.options)
        self.folder = folder.strip("/")
        self.thumbnail_size = thumbnail_size
        self.timeout = timeout

    def public_id(self, image_id: int) -> str:
        # Derived from the catalog id: a retried upload overwrites instead of duplicating.
        name = f"catalog-{image_id}"
        return f"{self.folder}/{name}" if self.folder else name

    def owns(self, key: str) -> bool:
        # Only ids that public_id() makes, in this deployment's folder.
        prefix = f"{self.folder}/catalog-" if self.folder else "catalog-"
        return key.startswith(prefix) and _CATALOG_ID.fullmatch(key[len(prefix) :]) is not None

    def publish(
        self,
        *,
        image_id: int,
        sha256: str,
        data: bytes,
        extension: str,
        preview: Image.Image | None = None,  # Cloudinary makes its own thumbnails
    ) -> HostedImage:
        import cloudinary.uploader
        from cloudinary.exceptions import Error as CloudinaryError

        try:
            result = cloudinary.uploader.upload(
                data,
                public_id=self.public_id(image_id),
                overwrite=True,
                invalidate=True,  # a replaced image must not be served stale by the CDN
                resource_type="image",
                timeout=self.timeout,
            )
        except (CloudinaryError, OSError) as exc:
            raise ImageHostError(f"Cloudinary upload failed: {exc}") from exc
        public_id = result["public_id"]
        return HostedImage(
            key=public_id, url=result["secure_url"], thumbnail_url=self.thumbnail_url(public_id)
        )

    def thumbnail_url(self, public_id: str) -> str:
        from cloudinary.utils import cloudinary_url

        url, _ = cloudinary_url(
            public_id,
            width=self.thumbnail_size,
            height=self.thumbnail_size,
            crop="fill",
            fetch_format="auto",
            quality="auto",
        )
        return url

    def delete(self, key: str) -> None:
        import cloudinary.uploader
        from cloudinary.exceptions import Error as CloudinaryError

        try:
            # "not found" is fine: the goal, no asset, holds. Derived thumbnails go with it.
            cloudinary.uploader.destroy(key, invalidate=True, timeout=self.timeout)
        except (CloudinaryError, OSError) as exc:
            raise ImageHostError(f"Cloudinary destroy failed: {exc}") from exc

    def read(self, key: str) -> bytes:
        from cloudinary.utils import cloudinary_url

        url, _ = cloudinary_url(key)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ImageHostError(f"Could not download {url}: {exc}") from exc
