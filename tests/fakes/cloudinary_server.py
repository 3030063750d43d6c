"""A small, honest stand-in for Cloudinary's Upload API and image delivery, over real HTTP.

`FakeCloudinary` listens on 127.0.0.1 and answers what the official `cloudinary` 1.46.3
Python SDK sends, so tests drive the real SDK rather than a mock. Point the SDK at it with

    cloudinary.config(**server.sdk_config())

which is, for a server on port PORT:

    cloudinary.config(
        cloud_name="demo", api_key="key", api_secret="secret",
        upload_prefix="http://127.0.0.1:PORT",  # Upload API: <prefix>/v1_1/<cloud>/<type>/<action>
        secure=False,                           # delivery URLs over http...
        cname="127.0.0.1:PORT",                 # ...on this host: http://<cname>/<cloud>/image/...
        private_cdn=False, cdn_subdomain=False, # keep /<cloud> in the path, no a1.-style shards
        secure_distribution="127.0.0.1:PORT",   # secure=True would give https://127.0.0.1:PORT
    )

(read from cloudinary/utils.py: `base_api_url` joins upload_prefix, "v1_1", cloud and path;
`unsigned_download_url_prefix` uses `cname` when secure is off and `secure_distribution`
when it is on; without private_cdn the cloud name stays the first path segment.) The
server speaks plain HTTP only, so https URLs built with secure=True cannot be fetched.
The SDK config is process-global: tests must put back what they change.

What it implements:

- `POST /v1_1/<cloud>/image/upload` (and `/auto/upload`, stored as an image): a
  multipart or urlencoded form whose `file` is the bytes, or a base64 data URI. Signed
  requests only: `api_key` must match, `timestamp` must be under an hour old, and
  `signature` must be the SHA-1 (or `signature_algorithm`) hex of the sorted `k=v` pairs
  joined by `&`, plus the api_secret, over every sent field except file, cloud_name,
  resource_type, api_key and signature; empty values are left out and a `k[]` list is
  signed as `k=a,b`. Signature version 2 (the SDK default) escapes `&` in a value as
  `%26`; version 1 does not; both are accepted. `folder` prefixes the public_id
  (`folder/public_id`, fixed-folder semantics); without a public_id one is made up, or
  taken from the file name with `use_filename` (plus a random suffix unless
  `unique_filename` is false). `overwrite` defaults to true: the same public_id uploaded
  three times is one asset with a new version each time. With `overwrite=false` an
  existing asset is left alone and answered with `"existing": true`. Pillow reads width,
  height and format; a non-image is 400 "Invalid image file", and an image in a format
  outside the list below (ICO, PSD, ...) 400 "not implemented". The answer carries
  public_id, version, version_id, signature (verifiable with the SDK's
  `verify_api_response_signature`), width, height, format, resource_type, created_at,
  tags, bytes, type "upload", etag (MD5 of the bytes, as Cloudinary's), url, secure_url,
  asset_folder, display_name, original_filename, api_key; "overwritten": true on a
  replace. url and secure_url both point at this server over http (real secure_url is
  https). Versions are the upload's Unix time, like Cloudinary's, but forced to rise by at
  least one per upload so that quick re-uploads still get distinct URLs. `upload_large`
  works when the file fits one chunk and it is given resource_type="image" (its default
  is raw, which the fake refuses); multi-chunk uploads are refused.
- `POST /v1_1/<cloud>/image/destroy`: signed like uploads; answers 200 `{"result": "ok"}`
  and removes the asset, or 200 `{"result": "not found"}`.
- Delivery, `GET`/`HEAD /<cloud>/image/upload/[<transformations>/][v<version>/]<public_id>
  [.<ext>]`, the URLs that `cloudinary_url(...)` and `CloudinaryImage(...).build_url(...)`
  build. The version is optional and, as on Cloudinary, any version serves the current
  asset. Without a transformation or format change the stored bytes come back as
  uploaded. Transformations, chained with `/`, are applied for real with Pillow: `w_`,
  `h_` (pixels, or a fraction of the input when at most 1.0), `dpr_`, and crop modes
  `c_scale` (the default), `c_fill` (cover then centre crop; any `g_` gravity is read as
  centre), `c_fit`, `c_limit` (fit, never enlarging) and `c_mfit`; `q_auto` (80) or
  `q_<1-100>`; `f_<fmt>` or an extension (jpg, png, webp, gif, avif, bmp, tiff), and
  `f_auto`, which gives WebP to an `Accept` that names image/webp and the original format
  otherwise. Other Cloudinary parameters are refused with 400 and an `X-Cld-Error` header
  that says the fake does not implement them. 404 with `X-Cld-Error` for unknown assets.

Refusals use Cloudinary's body shape `{"error": {"message": ...}}`, with statuses as the
real service gives them; wording follows Cloudinary's where known and is close, not
guaranteed identical: 400 "Missing required parameter - file", "Empty file", "Invalid
image file", "File size too large...", "Stale request..." (the SDK always signs with
the current time, so only hand-made requests meet it), bad public_ids (the fake
refuses `? & # \\ % < >` and leading or trailing `/` or space, where Cloudinary may tidy
some of them), unsigned uploads (the fake has no upload presets); 401 "Invalid cloud_name
...", "Must supply api_key", "Unknown API key ...", "Invalid Signature ... String to sign
- '...'.". It does not implement: video or raw assets, remote URL uploads, eager or
incoming transformations, tags/context/metadata endpoints, the Admin API, signed or
authenticated delivery URLs, private or authenticated types, or dynamic folders.

Fault injection: `fail_next(n, status, path_contains=...)` answers the next n requests
whose path contains that text with the status and a Cloudinary-shaped body (or `body=`
verbatim, e.g. a proxy's HTML page), and optionally `Retry-After`; the request is not
applied. `delay_next(n, seconds, path_contains=...)` holds them, then answers and applies
them normally, even when the client has given up by then. `requests` records each one
(method, path, action, public_id, status); `assets` holds what is stored, by public_id;
`upload_counts` counts stored uploads per public_id. `reset_faults()` forgets pending
faults; `reset()` also drops assets, counts and records, and drops held requests. The
server, its thread and the fault queue are shared with the other fakes (http_fake.py).

What the SDK does on its own (cloudinary 1.46.3 with urllib3 2.x, read from the source and
pinned by tests/catalog/test_fake_cloudinary.py):

- Every Upload API answer whose JSON has an "error" key raises a subclass of
  `cloudinary.exceptions.Error` picked by status (api_client/execute_request.py
  EXCEPTION_CODES): 400 `BadRequest`, 401 `AuthorizationRequired`, 403 `NotAllowed`, 404
  `NotFound`, 409 `AlreadyExists`, 420 and 429 `RateLimited`, 500 and 503 `GeneralError`;
  any other status (502, 504, ...) raises `Error` itself, and so does a body that is not
  JSON ("Error parsing server response (502) ..."). The message is the error's message;
  the exception carries no status code.
- Transport failures raise `Error` itself: "Unexpected error - ..." wrapping urllib3's
  `ReadTimeoutError` on a timeout, or `MaxRetryError` when the connection is refused.
- `timeout=` passed to `upload(...)`/`destroy(...)` bounds connecting and each read.
  `cloudinary.config(timeout=...)` is read by the Admin API only; the Upload API ignores
  it, so an upload without `timeout=` waits as long as the server takes.
- The SDK has no retry logic of its own. Its urllib3 pool keeps urllib3's default
  `Retry(3)`: a refused connection is tried 4 times, immediately; a POST is never retried
  after it was sent, neither on a timeout nor on any status (Retry-After included). A
  timed-out upload may still have been stored: re-upload to the same public_id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import math
import re
import secrets
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from tests.fakes.http_fake import FakeHTTPServer, Fault, KeepAliveHandler, Refusal, Response

# Cloudinary's free-plan limit for one image; paid plans allow more (pass max_image_bytes).
MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Cloudinary refuses signed requests whose timestamp is older than this.
MAX_TIMESTAMP_AGE_S = 3600
# What q_auto encodes with; Cloudinary picks per image, 80 is a fair stand-in.
AUTO_QUALITY = 80

# Fields that are sent but not signed (Cloudinary's "Generating authentication signatures").
_UNSIGNED_FIELDS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})
_API_ACTIONS = frozenset({("image", "upload"), ("auto", "upload"), ("image", "destroy")})
_BAD_PUBLIC_ID = re.compile(r"[?&#\\%<>]")
_EXIF_ORIENTATION = 0x0112
_VERSION = re.compile(r"v\d+")
_API_PATH = re.compile(r"/v1_1/([^/]+)/([^/]+)/([^/]+)")
_DELIVERY_PATH = re.compile(r"/([^/]+)/image/upload/(.+)")
# Every short parameter name of Cloudinary's transformation URL API, so that a path segment
# made of them reads as a transformation and anything else as part of the public_id.
# fmt: off
_TRANSFORMATION_KEYS = frozenset({
    "a", "ac", "af", "ar", "b", "bo", "br", "c", "co", "cs", "d", "dl", "dn", "dpr", "du", "e",
    "eo", "f", "fl", "fn", "fps", "g", "h", "ki", "l", "o", "p", "pg", "q", "r", "so", "sp", "t",
    "u", "vc", "vs", "w", "x", "y", "z",
})
# fmt: on
_CROP_MODES = frozenset({"scale", "fill", "fit", "limit", "mfit"})
# Cloudinary format name -> (Pillow format, Content-Type)
_FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "gif": ("GIF", "image/gif"),
    "avif": ("AVIF", "image/avif"),
    "bmp": ("BMP", "image/bmp"),
    "tiff": ("TIFF", "image/tiff"),
}
_FORMAT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff"}
_INJECTED_MESSAGES = {
    420: "Rate Limit Exceeded",
    429: "Rate Limit Exceeded",
    500: "General Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    action: str | None  # "upload", "destroy", "deliver", or None for anything else
    public_id: str | None  # the asset the request addressed, once known
    status: int


@dataclass(frozen=True)
class StoredAsset:
    public_id: str
    data: bytes
    format: str  # Cloudinary's name: "jpg", "png", ...
    width: int
    height: int
    version: int
    created_at: str
    etag: str
    asset_folder: str
    original_filename: str
    tags: tuple[str, ...] = ()


@dataclass
class _Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: bytes | str | None = None  # bytes from a file part, str from a plain field
    filename: str | None = None


class _Handler(KeepAliveHandler):
    # The methods the SDK and delivery URLs use; any other gets http.server's 501.
    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = KeepAliveHandler.serve


class FakeCloudinary(FakeHTTPServer[RecordedRequest]):
    """One fake Cloudinary product environment; a context manager, or start()/stop()."""

    handler_class = _Handler
    thread_name = "fake-cloudinary"

    def __init__(
        self,
        cloud_name: str = "demo",
        api_key: str = "key",
        api_secret: str = "secret",
        port: int = 0,
        signature_algorithm: str = "sha1",
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        if signature_algorithm not in ("sha1", "sha256"):
            raise ValueError("signature_algorithm must be 'sha1' or 'sha256'")
        super().__init__(port)
        self.cloud_name = cloud_name
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_algorithm = signature_algorithm
        self.max_image_bytes = max_image_bytes
        self._assets: dict[str, StoredAsset] = {}
        self._upload_counts: Counter[str] = Counter()
        self._last_version = 0

    def sdk_config(self) -> dict[str, Any]:
        """Keyword arguments for `cloudinary.config(...)` that send uploads and URLs here."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "signature_algorithm": self.signature_algorithm,
            "upload_prefix": self.url,
            "secure": False,
            "cname": self.host,
            "secure_distribution": self.host,
            "private_cdn": False,
            "cdn_subdomain": False,
            "secure_cdn_subdomain": False,
        }

    def reset(self) -> None:
        """Drop every asset, count, injected fault, record and still-delayed request."""
        with self._lock:
            super().reset()
            self._assets.clear()
            self._upload_counts.clear()

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 500,
        path_contains: str = "",
        body: bytes | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n requests whose path contains `path_contains` with `status`.

        The answer is `{"error": {"message": ...}}` unless `body` is given, which is sent
        as-is (text/html) the way a proxy in front of Cloudinary might answer.
        """
        self._add_fault(Fault(n, path_contains, status=status, body=body, retry_after=retry_after))

    @property
    def assets(self) -> dict[str, StoredAsset]:
        with self._lock:
            return dict(self._assets)

    @property
    def upload_counts(self) -> dict[str, int]:
        """Uploads stored per final public_id, overwrites included."""
        with self._lock:
            return dict(self._upload_counts)

    # -- request handling ------------------------------------------------------------------

    def _dispatch(self, handler: KeepAliveHandler, raw: bytes, failure: Fault | None) -> Response:
        path = urlsplit(handler.path).path
        api = _API_PATH.fullmatch(path)
        delivery = _DELIVERY_PATH.fullmatch(path)
        action = api.group(3) if api else "deliver" if delivery else None
        public_id: str | None = None
        headers: dict[str, str] = {}
        payload: bytes = b""
        content_type = "application/json"
        try:
            if failure is not None and failure.status is not None:
                if failure.body is None:
                    message = _INJECTED_MESSAGES.get(failure.status, "Injected failure")
                    raise Refusal(failure.status, message)
                status, payload, content_type = failure.status, failure.body, "text/html"
            elif api is not None:
                status, body, public_id = self._api(
                    handler.command, api.group(1), api.group(2), api.group(3), handler, raw
                )
                payload = json.dumps(body).encode()
                headers["X-Request-Id"] = secrets.token_hex(16)
            elif delivery is not None:
                status, payload, content_type, public_id = self._deliver(
                    handler.command,
                    unquote(delivery.group(1)),
                    unquote(delivery.group(2)),
                    handler.headers.get("Accept", ""),
                )
                headers["Cache-Control"] = "public, max-age=2592000"
            else:
                raise Refusal(404, f"FakeCloudinary does not implement {handler.command} {path}")
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

    # -- Upload API ------------------------------------------------------------------------

    def _api(
        self,
        method: str,
        cloud: str,
        resource_type: str,
        action: str,
        handler: KeepAliveHandler,
        raw: bytes,
    ) -> tuple[int, dict[str, Any], str | None]:
        if method != "POST":
            raise Refusal(404, f"FakeCloudinary does not implement {method} on the Upload API")
        if cloud != self.cloud_name:
            raise Refusal(401, f"Invalid cloud_name {cloud}")
        if (resource_type, action) not in _API_ACTIONS:
            raise Refusal(404, f"FakeCloudinary does not implement {resource_type}/{action}")
        form = _parse_form(handler.headers.get("Content-Type", ""), raw)
        self._authenticate(form.fields)
        if action == "destroy":
            return self._destroy(form.fields)
        if preset := form.fields.get("upload_preset"):
            raise Refusal(400, f"Upload preset not found: {preset}")  # the fake has none
        return self._upload(form, handler.headers.get("Content-Range"))

    def _authenticate(self, fields: dict[str, str]) -> None:
        signature = fields.get("signature")
        if not signature and not fields.get("api_key"):
            # An unsigned request: Cloudinary takes those only with an unsigned upload
            # preset, and the fake has no presets.
            if preset := fields.get("upload_preset"):
                raise Refusal(400, f"Upload preset not found: {preset}")
            raise Refusal(400, "Upload preset must be specified when using unsigned upload")
        if not signature:
            raise Refusal(400, "Missing required parameter - signature")
        api_key = fields.get("api_key")
        if not api_key:
            raise Refusal(401, "Must supply api_key")
        if api_key != self.api_key:
            raise Refusal(401, f"Unknown API key {api_key}")
        timestamp = fields.get("timestamp")
        if not timestamp:
            raise Refusal(400, "Missing required parameter - timestamp")
        try:
            reported = int(timestamp)
        except ValueError as exc:
            raise Refusal(400, f"Invalid timestamp {timestamp}") from exc
        if reported < time.time() - MAX_TIMESTAMP_AGE_S:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reported))
            raise Refusal(
                400, f"Stale request - reported time is {when} which is more than 1 hour ago"
            )
        signed = {k: v for k, v in fields.items() if k not in _UNSIGNED_FIELDS and v}
        to_sign_v2 = "&".join(sorted(f"{k}={v}".replace("&", "%26") for k, v in signed.items()))
        to_sign_v1 = "&".join(sorted(f"{k}={v}" for k, v in signed.items()))
        expected = {self._sign(to_sign_v2), self._sign(to_sign_v1)}
        if not any(hmac.compare_digest(signature, e) for e in expected):
            raise Refusal(401, f"Invalid Signature {signature}. String to sign - '{to_sign_v2}'.")

    def _sign(self, to_sign: str) -> str:
        return hashlib.new(
            self.signature_algorithm, (to_sign + self.api_secret).encode()
        ).hexdigest()

    def _upload(
        self, form: _Form, content_range: str | None
    ) -> tuple[int, dict[str, Any], str | None]:
        fields = form.fields
        if content_range is not None:
            # upload_large sends every chunk with a Content-Range; one that covers the whole
            # file is an ordinary upload.
            match = re.fullmatch(r"bytes 0-(\d+)/(\d+)", content_range.strip())
            if match is None or int(match.group(1)) + 1 != int(match.group(2)):
                raise Refusal(400, "FakeCloudinary does not implement multi-chunk uploads")
        data = _file_bytes(form.file)
        if len(data) > self.max_image_bytes:
            raise Refusal(
                400, f"File size too large. Got {len(data)}. Maximum is {self.max_image_bytes}."
            )
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # Pillow allows nothing else on an image it verified
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                pillow_format = image.format
                if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width  # reported as delivered: upright
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise Refusal(400, "Invalid image file") from exc
        format_ = _format_name(pillow_format)
        if format_ is None:
            raise Refusal(400, f"FakeCloudinary does not implement {pillow_format} images")

        folder = fields.get("folder", "").strip("/")
        original = PurePosixPath(fields.get("filename_override") or form.filename or "file").stem
        public_id = fields.get("public_id") or self._made_up_public_id(fields, original)
        if folder:
            public_id = f"{folder}/{public_id}"
        if (
            _BAD_PUBLIC_ID.search(public_id)
            or public_id != public_id.strip(" /")
            or "//" in public_id
        ):
            raise Refusal(400, f"Invalid public_id {public_id}")
        overwrite = _truthy(fields.get("overwrite", "1"))
        tags = tuple(tag for tag in fields.get("tags", "").split(",") if tag)

        with self._lock:
            existing = self._assets.get(public_id)
            if existing is not None and not overwrite:
                return 200, {**self._describe(existing), "existing": True}, public_id
            self._last_version = max(int(time.time()), self._last_version + 1)
            asset = StoredAsset(
                public_id=public_id,
                data=data,
                format=format_,
                width=width,
                height=height,
                version=self._last_version,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),  # as Cloudinary's
                asset_folder=folder,
                original_filename=original,
                tags=tags,
            )
            self._assets[public_id] = asset
            self._upload_counts[public_id] += 1
        body = self._describe(asset)
        if existing is not None:
            body["overwritten"] = True
        return 200, body, public_id

    def _made_up_public_id(self, fields: dict[str, str], original: str) -> str:
        alphabet = string.ascii_lowercase + string.digits
        if _truthy(fields.get("use_filename", "0")):
            if not _truthy(fields.get("unique_filename", "1")):
                return original
            return f"{original}_{''.join(secrets.choice(alphabet) for _ in range(6))}"
        return "".join(secrets.choice(alphabet) for _ in range(20))

    def _describe(self, asset: StoredAsset) -> dict[str, Any]:
        """An upload answer for `asset`, with the fields Cloudinary returns."""
        location = f"{self.cloud_name}/image/upload/v{asset.version}/{asset.public_id}"
        url = f"{self.url}/{location}.{asset.format}"
        # Cloudinary signs its answer like a request, with signature version 1.
        signature = self._sign(f"public_id={asset.public_id}&version={asset.version}")
        return {
            "asset_id": _hex_id(asset.public_id),
            "public_id": asset.public_id,
            "version": asset.version,
            "version_id": _hex_id(f"{location}{asset.etag}"),
            "signature": signature,
            "width": asset.width,
            "height": asset.height,
            "format": asset.format,
            "resource_type": "image",
            "created_at": asset.created_at,
            "tags": list(asset.tags),
            "bytes": len(asset.data),
            "type": "upload",
            "etag": asset.etag,
            "placeholder": False,
            "url": url,
            "secure_url": url,  # plain http: this server has no TLS
            "asset_folder": asset.asset_folder,
            "display_name": asset.public_id.rsplit("/", 1)[-1],
            "original_filename": asset.original_filename,
            "api_key": self.api_key,
        }

    def _destroy(self, fields: dict[str, str]) -> tuple[int, dict[str, Any], str | None]:
        public_id = fields.get("public_id")
        if not public_id:
            raise Refusal(400, "Missing required parameter - public_id")
        with self._lock:
            if fields.get("type", "upload") != "upload" or public_id not in self._assets:
                return 200, {"result": "not found"}, public_id
            del self._assets[public_id]
        return 200, {"result": "ok"}, public_id

    # -- delivery --------------------------------------------------------------------------

    def _deliver(
        self, method: str, cloud: str, rest: str, accept: str
    ) -> tuple[int, bytes, str, str | None]:
        if method not in ("GET", "HEAD"):
            raise Refusal(404, f"FakeCloudinary does not implement {method} on delivery URLs")
        if cloud != self.cloud_name:
            raise Refusal(404, f"Invalid cloud_name {cloud}")
        asset, extension, steps = self._find(rest.split("/"))

        target = asset.format
        if extension is not None:
            target = extension
        for step in steps:
            if "f" in step:
                wanted = step["f"]
                if wanted == "auto":
                    target = "webp" if "image/webp" in accept else target
                else:
                    target = _FORMAT_ALIASES.get(wanted, wanted)
                    if target not in _FORMATS:
                        raise Refusal(400, f"FakeCloudinary does not implement format {wanted}")
        resizes = [step for step in steps if step.keys() & {"w", "h", "c", "dpr"}]
        qualities = [step["q"] for step in steps if "q" in step]
        if not resizes and not qualities and target == asset.format:
            return 200, asset.data, _FORMATS[asset.format][1], asset.public_id

        with Image.open(io.BytesIO(asset.data)) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
        for step in resizes:
            image = _resize(image, step)
        quality = AUTO_QUALITY
        if qualities:
            quality = AUTO_QUALITY if qualities[-1] == "auto" else _quality(qualities[-1])
        pillow_format, content_type = _FORMATS[target]
        if pillow_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = _flatten(image)
        buffer = io.BytesIO()
        options = {"quality": quality} if pillow_format in ("JPEG", "WEBP", "AVIF") else {}
        image.save(buffer, format=pillow_format, **options)
        return 200, buffer.getvalue(), content_type, asset.public_id

    def _find(self, segments: list[str]) -> tuple[StoredAsset, str | None, list[dict[str, str]]]:
        """The asset a delivery path names, the format its extension asks for, its steps.

        With a `v<digits>` segment, what comes before it is transformations and what
        comes after is the public_id. Without one, leading segments made of transformation
        parameters are transformations. A public_id may itself start with `v2/` or hold a
        dot, so each reading is tried until one names a stored asset.
        """
        readings: list[tuple[list[str], list[str]]] = []
        for cut, segment in enumerate(segments[:-1]):
            if _VERSION.fullmatch(segment):
                readings.append((segments[:cut], segments[cut + 1 :]))
                break
        leading = 0
        while leading < len(segments) - 1 and _looks_like_transformation(segments[leading]):
            leading += 1
        readings.append((segments[:leading], segments[leading:]))
        for transformations, id_segments in readings:
            public_id = "/".join(id_segments)
            stem, dot, extension = public_id.rpartition(".")
            extension = _FORMAT_ALIASES.get(extension.lower(), extension.lower())
            with self._lock:
                if dot and extension in _FORMATS and stem in self._assets:
                    found, wanted = self._assets[stem], extension
                elif public_id in self._assets:
                    found, wanted = self._assets[public_id], None
                else:
                    continue
            return found, wanted, [_transformation(segment) for segment in transformations]
        public_id = "/".join(readings[0][1])
        raise Refusal(404, f"Resource not found - {public_id}")


# -- helpers -------------------------------------------------------------------------------


def _hex_id(text: str) -> str:
    """A stable 32-hex-digit id, shaped like Cloudinary's asset_id and version_id."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true")


def _format_name(pillow_format: str | None) -> str | None:
    for name, (candidate, _) in _FORMATS.items():
        if candidate == pillow_format:
            return name
    return None


def _parse_form(content_type: str, raw: bytes) -> _Form:
    """Multipart or urlencoded fields; `k[]` lists become `k=a,b`, as the SDK signs them."""
    header = Message()
    header["Content-Type"] = content_type or "application/octet-stream"
    form = _Form()
    lists: dict[str, list[str]] = {}

    def add(name: str, value: str) -> None:
        if name.endswith("[]"):
            lists.setdefault(name[:-2], []).append(value)
        else:
            form.fields[name] = value

    if header.get_content_type() == "multipart/form-data":
        boundary = header.get_param("boundary")
        if not isinstance(boundary, str):
            raise Refusal(400, "Malformed multipart body: no boundary")
        delimiter = b"\r\n--" + boundary.encode()
        for chunk in (b"\r\n" + raw).split(delimiter)[1:]:
            if chunk.startswith(b"--"):
                break  # the closing delimiter
            head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            part = Message()
            for line in head.decode("utf-8", "replace").split("\r\n"):
                name, _, value = line.partition(":")
                part[name.strip()] = value.strip()
            field_name = part.get_param("name", header="content-disposition")
            if not isinstance(field_name, str):
                continue
            filename = part.get_param("filename", header="content-disposition")
            if field_name == "file" and isinstance(filename, str):
                form.file, form.filename = body, filename
            elif field_name == "file":
                form.file = body.decode("utf-8", "replace")
            else:
                add(field_name, body.decode("utf-8", "replace"))
    elif header.get_content_type() == "application/x-www-form-urlencoded":
        for name, values in parse_qs(raw.decode("utf-8", "replace")).items():
            for value in values:
                if name == "file":
                    form.file = value
                else:
                    add(name, value)
    else:
        raise Refusal(400, f"FakeCloudinary does not accept {content_type or 'this body'}")
    for name, values in lists.items():
        form.fields[name] = ",".join(values)
    return form


def _file_bytes(file: bytes | str | None) -> bytes:
    if file is None:
        raise Refusal(400, "Missing required parameter - file")
    if isinstance(file, bytes):
        if not file:
            raise Refusal(400, "Empty file")
        return file
    match = re.fullmatch(r"data:[^,;]*(?:;[\w-]+=[\w-]+)*;base64,([A-Za-z0-9+/\n=]+)", file)
    if match is not None:
        try:
            data = base64.b64decode(match.group(1))
        except binascii.Error as exc:
            raise Refusal(400, "Invalid image file") from exc
        if not data:
            raise Refusal(400, "Empty file")
        return data
    if re.match(r"(?:https?|ftp|s3|gs):", file):
        raise Refusal(400, "FakeCloudinary does not fetch remote files; upload the bytes")
    raise Refusal(400, "Invalid image file")


def _looks_like_transformation(segment: str) -> bool:
    parts = segment.split(",")
    return all(
        (key := part.partition("_")[0]) in _TRANSFORMATION_KEYS and part != key for part in parts
    )


def _transformation(segment: str) -> dict[str, str]:
    """One `/`-separated transformation segment, refused unless the fake can apply it."""
    step: dict[str, str] = {}
    for part in segment.split(","):
        key, _, value = part.partition("_")
        if key not in ("w", "h", "c", "g", "q", "f", "dpr") or not value:
            raise Refusal(400, f"FakeCloudinary does not implement the transformation {part}")
        step[key] = value
    crop = step.get("c", "scale")
    if crop not in _CROP_MODES:
        raise Refusal(400, f"FakeCloudinary does not implement the crop mode {crop}")
    return step


def _quality(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise Refusal(400, f"Invalid quality - {value}")
    return int(value)


def _dimension(value: str | None, original: int, dpr: float, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise Refusal(400, f"Invalid {name} - {value}") from exc
    if number <= 0:
        raise Refusal(400, f"Invalid {name} - {value}")
    if "." in value and number <= 1.0:
        number *= original  # Cloudinary reads 0.5 as half the input's size
    return max(1, round(number * dpr))


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG, with transparency laid on white as Cloudinary does, not on black."""
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _resize(image: Image.Image, step: dict[str, str]) -> Image.Image:
    width, height = image.size
    dpr_text = step.get("dpr", "1.0")
    try:
        dpr = 1.0 if dpr_text == "auto" else float(dpr_text)
    except ValueError as exc:
        raise Refusal(400, f"Invalid dpr - {dpr_text}") from exc
    w = _dimension(step.get("w"), width, dpr, "width")
    h = _dimension(step.get("h"), height, dpr, "height")
    if w is None and h is None:
        return image
    crop = step.get("c", "scale")
    if crop == "fill" and w is not None and h is not None:
        return ImageOps.fit(image, (w, h), method=Image.Resampling.LANCZOS)
    if crop in ("scale", "fill") and (w is None or h is None):
        # One dimension given: the other follows the aspect ratio.
        if w is None:
            w = max(1, round(width * h / height))
        else:
            h = max(1, round(height * w / width))
        return image.resize((w, h), Image.Resampling.LANCZOS)
    if crop == "scale":
        return image.resize((w, h), Image.Resampling.LANCZOS)
    # fit, limit and mfit keep the aspect ratio inside the box.
    scale = min(w / width if w else math.inf, h / height if h else math.inf)
    if (crop == "limit" and scale >= 1) or (crop == "mfit" and scale <= 1):
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)
