"""A stand-in for the part of Cloudinary that the app uses: upload, destroy, delivery.

`FakeCloudinary` answers what catalog/hosting/cloudinary.py sends through the `cloudinary`
1.46.3 SDK. Point the SDK here with `cloudinary.config(**server.sdk_config())` (process-
global: put it back) or a CLOUDINARY_URL with `?upload_prefix=<url>&secure=false&cname=<host>`.

- `POST /v1_1/<cloud>/image/upload`: multipart with the file's bytes, signed (`api_key`
  must match; `signature` the SHA-1 of the sorted `k=v` fields joined by `&` plus the
  secret, else 401 "Invalid Signature"), with the app's options only: `public_id`,
  `overwrite=true`, `invalidate`. A re-upload replaces the asset with a higher version.
  400 "Invalid image file" for a non-image. The answer carries public_id, version, width,
  height, format, bytes, url and secure_url (plain http here), "overwritten" on a replace.
- `POST /v1_1/<cloud>/image/destroy` (`public_id`, `invalidate`): `{"result": "ok"}` and
  the asset is gone, or `{"result": "not found"}`.
- `GET /<cloud>/image/upload/[<transformation>/][v<version>/]<public_id>[.<ext>]`: the bytes
  as uploaded, or the app's thumbnail made with Pillow: `c_fill,w_,h_`, `q_auto`/`q_<n>`,
  `f_auto` (WebP to an `Accept` naming image/webp). 404 with `X-Cld-Error` when unknown.

Anything else (other options, unsigned uploads, data URIs, other resource types, actions
or transformations) is answered 501 "does not emulate": the app does not send it. Errors
are `{"error": {"message": ...}}`. Faults: `fail_next(n, status, path_contains=...,
body=...)` (`body` verbatim, as a proxy's page), `delay_next(n, seconds, ...)` (applied
even when the client gave up); `requests`, `assets`, `upload_counts`; `reset_faults()`,
`reset()`. What the SDK raises for each failure (by status, for a non-JSON body, on a
timeout or refused connection; `cloudinary.config(timeout=...)` does not bound uploads;
no POST is retried once sent) is pinned by tests/fakes/test_cloudinary_server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from tests.fakes.http_fake import FakeHTTPServer, Fault, KeepAliveHandler, Refusal, Response

AUTO_QUALITY = 80  # what q_auto encodes with; Cloudinary picks per image
_AUTH_FIELDS = frozenset({"api_key", "timestamp", "signature"})
_OPTIONS = {
    "upload": {"public_id", "overwrite", "invalidate"},
    "destroy": {"public_id", "invalidate"},
}
_API_PATH = re.compile(r"/v1_1/([^/]+)/([^/]+)/([^/]+)")
_DELIVERY_PATH = re.compile(r"/([^/]+)/image/upload/(.+)")
# Cloudinary format name -> (Pillow format, Content-Type)
_FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "gif": ("GIF", "image/gif"),
    "bmp": ("BMP", "image/bmp"),
    "tiff": ("TIFF", "image/tiff"),
}
_INJECTED_MESSAGES = {420: "Rate Limit Exceeded", 429: "Rate Limit Exceeded"}


def _not_emulated(what: str) -> Refusal:
    return Refusal(501, f"FakeCloudinary does not emulate {what}: the app does not send it")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    action: str | None  # "upload", "destroy", "deliver", or None for anything else
    public_id: str | None
    status: int


@dataclass(frozen=True)
class StoredAsset:
    public_id: str
    data: bytes
    format: str  # Cloudinary's name: "jpg", "png", ...
    width: int
    height: int
    version: int


class _Handler(KeepAliveHandler):
    do_GET = do_POST = do_HEAD = KeepAliveHandler.serve


class FakeCloudinary(FakeHTTPServer[RecordedRequest]):
    """One fake Cloudinary product environment; a context manager, or start()/stop()."""

    handler_class = _Handler
    thread_name = "fake-cloudinary"

    def __init__(
        self, cloud_name: str = "demo", api_key: str = "key", api_secret: str = "secret"
    ) -> None:
        super().__init__(0)
        self.cloud_name, self.api_key, self.api_secret = cloud_name, api_key, api_secret
        self._assets: dict[str, StoredAsset] = {}
        self._upload_counts: Counter[str] = Counter()
        self._last_version = 0

    def sdk_config(self) -> dict[str, Any]:
        """Keyword arguments for `cloudinary.config(...)` that send uploads and URLs here."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "upload_prefix": self.url,
            "secure": False,
            "cname": self.host,
            "private_cdn": False,
            "cdn_subdomain": False,
        }

    def reset(self) -> None:
        """Drop every asset, count, injected fault, record and still-delayed request."""
        with self._lock:
            super().reset()
            self._assets.clear()
            self._upload_counts.clear()

    def fail_next(
        self,
        n: int,
        status: int = 500,
        path_contains: str = "",
        body: bytes | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n requests whose path contains `path_contains` with `status`."""
        self._add_fault(Fault(n, path_contains, status=status, body=body, retry_after=retry_after))

    @property
    def assets(self) -> dict[str, StoredAsset]:
        with self._lock:
            return dict(self._assets)

    @property
    def upload_counts(self) -> dict[str, int]:
        """Uploads stored per public_id, overwrites included."""
        with self._lock:
            return dict(self._upload_counts)

    def _dispatch(self, handler: KeepAliveHandler, raw: bytes, failure: Fault | None) -> Response:
        path = urlsplit(handler.path).path
        api, delivery = _API_PATH.fullmatch(path), _DELIVERY_PATH.fullmatch(path)
        action = api.group(3) if api else "deliver" if delivery else None
        public_id: str | None = None
        headers: dict[str, str] = {}
        content_type = "application/json"
        try:
            if failure is not None and failure.status is not None:
                if failure.body is not None:
                    raise _Verbatim(failure.status, failure.body)
                message = _INJECTED_MESSAGES.get(failure.status, "General Error")
                raise Refusal(failure.status, message)
            if api is not None and handler.command == "POST":
                fields, file = _parse_form(handler.headers.get("Content-Type", ""), raw)
                public_id = fields.get("public_id")
                body = self._api(api.group(1), api.group(2), api.group(3), fields, file)
                status, payload = 200, json.dumps(body).encode()
            elif delivery is not None and handler.command in ("GET", "HEAD"):
                status, payload, content_type, public_id = self._deliver(
                    unquote(delivery.group(1)),
                    unquote(delivery.group(2)),
                    handler.headers.get("Accept", ""),
                )
            else:
                raise _not_emulated(f"{handler.command} {path}")
        except _Verbatim as verbatim:
            status, payload, content_type = verbatim.status, verbatim.body, "text/html"
        except Exception as exc:
            refusal = exc if isinstance(exc, Refusal) else self._crash()
            status = refusal.status
            if action == "deliver":
                # Delivery errors come back in a header, not in a JSON body.
                headers["X-Cld-Error"] = refusal.message
                payload, content_type = b"", "text/plain"
            else:
                payload = json.dumps({"error": {"message": refusal.message}}).encode()
        self._record(RecordedRequest(handler.command, path, action, public_id, status))
        return Response(status, payload, content_type, headers)

    def _api(
        self, cloud: str, resource_type: str, action: str, fields: dict[str, str], file: Any
    ) -> dict[str, Any]:
        if cloud != self.cloud_name:
            raise Refusal(401, f"Invalid cloud_name {cloud}")
        if resource_type != "image" or action not in _OPTIONS:
            raise _not_emulated(f"{resource_type}/{action}")
        if unknown := sorted(fields.keys() - _OPTIONS[action] - _AUTH_FIELDS):
            raise _not_emulated(f"the {action} options {', '.join(unknown)}")
        if fields.get("api_key") != self.api_key or "signature" not in fields:
            raise Refusal(401, f"Unknown API key {fields.get('api_key')}")
        signed = sorted(
            f"{k}={v}" for k, v in fields.items() if k not in ("api_key", "signature") and v
        )
        to_sign = "&".join(signed)
        expected = hashlib.sha1((to_sign + self.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(fields["signature"], expected):
            raise Refusal(
                401, f"Invalid Signature {fields['signature']}. String to sign - '{to_sign}'."
            )
        public_id = fields.get("public_id")
        if not public_id:
            raise _not_emulated("uploads without a public_id")
        if action == "destroy":
            with self._lock:
                found = self._assets.pop(public_id, None)
            return {"result": "ok" if found else "not found"}
        if fields.get("overwrite", "1") not in ("1", "true"):
            raise _not_emulated("overwrite=false")
        return self._upload(public_id, file)

    def _upload(self, public_id: str, data: Any) -> dict[str, Any]:
        if data is None:
            raise Refusal(400, "Missing required parameter - file")
        if not isinstance(data, bytes):
            raise _not_emulated("uploads of anything but the file's bytes")
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                (width, height), pillow_format = image.size, image.format
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise Refusal(400, "Invalid image file") from exc
        format_ = next((name for name, (f, _) in _FORMATS.items() if f == pillow_format), None)
        if format_ is None:
            raise _not_emulated(f"{pillow_format} images")
        with self._lock:
            existing = self._assets.get(public_id)
            # Versions are the upload's Unix time, forced to rise so re-uploads get new URLs.
            self._last_version = max(int(time.time()), self._last_version + 1)
            asset = StoredAsset(public_id, data, format_, width, height, self._last_version)
            self._assets[public_id] = asset
            self._upload_counts[public_id] += 1
        url = f"{self.url}/{self.cloud_name}/image/upload/v{asset.version}/{public_id}.{format_}"
        body = {
            "public_id": public_id,
            "version": asset.version,
            "width": width,
            "height": height,
            "format": format_,
            "resource_type": "image",
            "type": "upload",
            "bytes": len(data),
            "url": url,
            "secure_url": url,  # plain http: this server has no TLS
        }
        if existing is not None:
            body["overwritten"] = True
        return body

    def _deliver(self, cloud: str, rest: str, accept: str) -> tuple[int, bytes, str, str | None]:
        if cloud != self.cloud_name:
            raise Refusal(404, f"Invalid cloud_name {cloud}")
        segments = rest.split("/")
        transformation = ""
        if re.fullmatch(r"[a-z]+_[^,]+(,[a-z]+_[^,]+)*", segments[0]) and len(segments) > 1:
            transformation = segments.pop(0)
        step = dict(part.split("_", 1) for part in transformation.split(",") if part)
        if re.fullmatch(r"v\d+", segments[0]) and len(segments) > 1:
            segments.pop(0)  # any version serves the current asset, as on Cloudinary
        public_id = "/".join(segments)
        stem, _, extension = public_id.rpartition(".")
        with self._lock:
            asset = self._assets.get(public_id) or self._assets.get(stem)
        if asset is None:
            raise Refusal(404, f"Resource not found - {public_id}")
        target = extension if asset.public_id == stem and extension in _FORMATS else asset.format
        if not step and target == asset.format:
            return 200, asset.data, _FORMATS[target][1], asset.public_id
        if step.keys() - {"c", "w", "h", "q", "f"} or step.get("c", "fill") != "fill":
            raise _not_emulated(f"the transformation {transformation}")
        if step.get("f", "auto") != "auto":
            raise _not_emulated(f"f_{step['f']}")
        if "f" in step and "image/webp" in accept:
            target = "webp"
        with Image.open(io.BytesIO(asset.data)) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
        if "w" in step and "h" in step:
            image = ImageOps.fit(image, (int(step["w"]), int(step["h"])), Image.Resampling.LANCZOS)
        elif "w" in step or "h" in step:
            raise _not_emulated("c_fill with one dimension")
        quality = AUTO_QUALITY if step.get("q", "auto") == "auto" else int(step["q"])
        pillow_format, content_type = _FORMATS[target]
        if pillow_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        options = {"quality": quality} if pillow_format in ("JPEG", "WEBP") else {}
        image.save(buffer, format=pillow_format, **options)
        return 200, buffer.getvalue(), content_type, asset.public_id


class _Verbatim(Exception):
    """An injected answer sent as-is, as a proxy in front of Cloudinary might answer."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body


def _parse_form(content_type: str, raw: bytes) -> tuple[dict[str, str], bytes | str | None]:
    """The fields of a multipart body, and its `file`: bytes from a file part, else text."""
    header = Message()
    header["Content-Type"] = content_type or "application/octet-stream"
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise _not_emulated(f"a {content_type or 'bodiless'} request")
    fields: dict[str, str] = {}
    file: bytes | str | None = None
    for chunk in (b"\r\n" + raw).split(b"\r\n--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            part[name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            has_filename = part.get_param("filename", header="content-disposition") is not None
            file = body if has_filename else body.decode("utf-8", "replace")
        elif isinstance(name, str):
            fields[name] = body.decode("utf-8", "replace")
    return fields, file
