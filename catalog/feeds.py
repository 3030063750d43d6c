"""Reading a catalog feed (catalog sync): a CSV or JSON Lines file, on disk or at an http(s)
URL, turned into rows that keep their line numbers, so a report can say which line is wrong.

Nothing here touches the catalog: catalog.sync cleans each row's values and upserts it.
A feed that cannot be read at all (missing, too large, not UTF-8, a CSV without an
`external_id` column) raises FeedUnreadable; a line that cannot be read (not JSON, the
wrong number of cells) is a row with an `error`, and the rest of the feed is read.

Pictures named by a row are found where its feed is: an http(s) URL as it is, a relative
path in a local feed's folder (never outside it), or joined to a URL feed's URL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from django.conf import settings

from search.fetching import FetchPolicy, fetch_image
from search.imaging import ImageRejected, read_limited

# A feed is read whole before any row is synced (pruning needs every id it lists): a
# product catalog of a million rows is 100-200 MB of CSV, and anything past that is
# either another kind of file or one to split into several feeds.
FEED_MAX_BYTES = 200 * 1024 * 1024
# Seconds for a whole feed's download; SYNC_FETCH_DEADLINE_SECONDS is for one picture,
# and a feed of FEED_MAX_BYTES needs longer than that on a slow link.
FEED_FETCH_DEADLINE_SECONDS = 600.0
FORMATS = ("csv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = ("external_id", "image", "additional_images", "title", "tags", "link_url")
METADATA_PREFIX = "metadata."
# additional_images in a CSV cell: URLs or paths separated by whitespace or `|`.
_PICTURE_LIST_SEPARATOR = re.compile(r"[\s|]+")


class FeedUnreadable(Exception):
    """The feed as a whole cannot be read; nothing of it was synced."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class FeedRow:
    """One item as its feed lists it: `values` holds external_id, image, additional_images
    (a list), title, tags, link_url and metadata (a dict), as written, not cleaned yet.
    `error`: why the line could not be read at all (then `values` may be empty)."""

    line: int
    values: dict[str, Any]
    error: str = ""


@dataclass
class Feed:
    name: str  # as given: a path or a URL
    format: str
    size: int  # bytes read
    rows: list[FeedRow]
    url: str = ""  # a URL feed's URL, against which relative pictures are joined
    folder: Path | None = None  # a local feed's folder, where relative pictures are read
    ignored_columns: list[str] = field(default_factory=list)

    def picture_location(self, value: str) -> str | Path:
        """Where the picture a row names is: an http(s) URL to fetch, or a file in a local
        feed's folder. Raises ImageRejected for anything else."""
        value = value.strip()
        scheme = urlsplit(value).scheme.lower() if ":" in value else ""
        if scheme in ("http", "https"):
            return value
        if scheme:
            raise ImageRejected(
                "url_not_allowed",
                f"A feed's pictures are http:// or https:// URLs, or paths relative to the "
                f"feed; `{scheme}:` addresses are not read.",
            )
        if self.url:
            return urljoin(self.url, value)
        assert self.folder is not None
        folder = self.folder.resolve()
        path = (folder / value).resolve()  # links followed: one leading out is refused too
        if not path.is_relative_to(folder):
            raise ImageRejected(
                "path_not_allowed",
                f"{value} is outside the feed's folder; a local feed's pictures are read from "
                "its folder and the folders inside it only.",
            )
        return path


def read_picture_file(path: Path) -> bytes:
    """The bytes of a picture a local feed names (at most IMAGE_MAX_BYTES)."""
    if not path.is_file():
        raise ImageRejected("file_not_found", "There is no such file in the feed's folder.")
    try:
        with path.open("rb") as file:
            return read_limited(file, max_bytes=settings.IMAGE_MAX_BYTES)
    except OSError as exc:
        raise ImageRejected(
            "unreadable_file", f"The file could not be read ({exc.strerror or exc})."
        ) from None


def read_feed(source: str, *, format: str | None = None) -> Feed:
    """The feed at `source` (a path, or an http(s) URL fetched with catalog sync's URL
    checks), in `format` ("csv" or "jsonl"; None: from its suffix, else from its first
    character). Raises FeedUnreadable."""
    if format is not None and format not in FORMATS:
        raise FeedUnreadable("invalid_feed_format", f"--format is csv or jsonl, not {format!r}.")
    is_url = urlsplit(source).scheme.lower() in ("http", "https")
    data = _download(source) if is_url else _read_local(Path(source))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FeedUnreadable(
            "feed_not_utf8",
            f"Line {line} of the feed is not UTF-8 text; save the feed as UTF-8.",
        ) from None
    format = format or _format_of(urlsplit(source).path if is_url else source, text)
    feed = Feed(
        name=source,
        format=format,
        size=len(data),
        rows=[],
        url=source if is_url else "",
        folder=None if is_url else Path(source).parent,
    )
    if format == "csv":
        feed.rows, feed.ignored_columns = _csv_rows(text)
    else:
        feed.rows, feed.ignored_columns = _jsonl_rows(text)
    return feed


def _too_large() -> FeedUnreadable:
    return FeedUnreadable(
        "feed_too_large",
        f"The feed is larger than {FEED_MAX_BYTES // 1_048_576} MB; split it into several "
        "feeds (each item in one of them) and sync each.",
    )


def _read_local(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise FeedUnreadable("feed_not_found", f"{path} does not exist or is not a file.")
        with path.open("rb") as file:
            data = file.read(FEED_MAX_BYTES + 1)
    except OSError as exc:
        raise FeedUnreadable(
            "feed_not_found", f"{path} could not be read ({exc.strerror or exc})."
        ) from None
    if len(data) > FEED_MAX_BYTES:
        raise _too_large()
    return data


def _download(url: str) -> bytes:
    policy = FetchPolicy.for_feeds()
    policy = dataclasses.replace(
        policy,
        max_bytes=FEED_MAX_BYTES,
        deadline=max(policy.deadline, FEED_FETCH_DEADLINE_SECONDS),
    )
    try:
        return fetch_image(url, policy=policy)
    except ImageRejected as exc:
        if exc.code == "image_too_large":
            raise _too_large() from None
        raise FeedUnreadable(exc.code, f"The feed could not be fetched. {exc.detail}") from None


def _format_of(path: str, text: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _known_column(name: str) -> str | None:
    """The column's name as rows hold it, or None for one that is not read."""
    lower = name.strip().lower()
    if lower in COLUMNS:
        return lower
    if lower.startswith(METADATA_PREFIX) and name.strip()[len(METADATA_PREFIX) :].strip():
        return METADATA_PREFIX + name.strip()[len(METADATA_PREFIX) :].strip()
    return None


def picture_list(value: object) -> list[str] | None:
    """additional_images as a list of strings: a JSON list, or text separated by whitespace
    or `|`; None when it is neither."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in _PICTURE_LIST_SEPARATOR.split(value) if part]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    return None


# --- CSV ---------------------------------------------------------------------------------


def _delimiter(header: str) -> str:
    """Comma, unless the header only splits into an `external_id` cell by `;` or a tab
    (spreadsheets in many locales save with `;`)."""
    for delimiter in (",", ";", "\t"):
        cells = next(csv.reader([header], delimiter=delimiter), [])
        if "external_id" in (cell.strip().lower() for cell in cells):
            return delimiter
    return ","


def _csv_rows(text: str) -> tuple[list[FeedRow], list[str]]:
    first_line = text.split("\n", 1)[0].rstrip("\r")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    try:
        header = next(reader)
    except StopIteration:
        raise FeedUnreadable(
            "feed_no_header", "The CSV feed is empty; its first line names the columns."
        ) from None
    except csv.Error as exc:
        raise FeedUnreadable("feed_no_header", f"The CSV header cannot be read ({exc}).") from None
    names = [_known_column(name) for name in header]
    if "external_id" not in names:
        raise FeedUnreadable(
            "feed_no_external_id",
            "The CSV feed's first line has no `external_id` column; it names the columns "
            "(external_id, image, title, tags, link_url, metadata.*).",
        )
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        raise FeedUnreadable(
            "feed_repeated_column", f"The CSV header names {repeated[0]} more than once."
        )
    ignored = [cell for cell, name in zip(header, names, strict=True) if name is None]
    rows: list[FeedRow] = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append(FeedRow(line=line, values={}, error=f"the CSV line cannot be read ({exc})"))
            continue
        if not cells or cells == [""]:
            continue  # a blank line
        values = _csv_values(names, cells)
        if len(cells) != len(header):
            # Usually a cut-off feed or a comma inside an unquoted cell: its cells are not
            # where the header says, so none of them is trusted.
            error = f"it has {len(cells)} cells where the header names {len(header)}"
            rows.append(FeedRow(line=line, values=values, error=error))
            continue
        rows.append(FeedRow(line=line, values=values))
    return rows, ignored


def _csv_values(names: list[str | None], cells: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {"metadata": {}}
    for name, cell in zip(names, cells, strict=False):
        if name is None:
            continue
        if name.startswith(METADATA_PREFIX):
            if cell.strip():  # an empty cell: the item has no such value
                values["metadata"][name[len(METADATA_PREFIX) :]] = cell.strip()
        else:
            values[name] = cell
    return values


# --- JSON Lines --------------------------------------------------------------------------


def _jsonl_rows(text: str) -> tuple[list[FeedRow], list[str]]:
    rows: list[FeedRow] = []
    ignored: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            rows.append(FeedRow(line=number, values={}, error=f"it is not JSON ({exc})"))
            continue
        if not isinstance(item, dict):
            rows.append(FeedRow(line=number, values={}, error="it is not a JSON object"))
            continue
        values, unknown = _jsonl_values(item)
        ignored.update(dict.fromkeys(unknown))
        rows.append(FeedRow(line=number, values=values))
    return rows, list(ignored)


def _jsonl_values(item: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in item.items():
        name = _known_column(key)
        if key == "metadata":
            if isinstance(value, dict):
                metadata.update(value)
            else:
                values["metadata"] = value  # refused when cleaned, with the usual sentence
        elif name is None:
            unknown.append(key)
        elif name.startswith(METADATA_PREFIX):
            metadata[name[len(METADATA_PREFIX) :]] = value
        elif name == "external_id" and isinstance(value, int) and not isinstance(value, bool):
            values[name] = str(value)  # {"external_id": 42} names the same item as a CSV's 42
        else:
            values[name] = value
    values.setdefault("metadata", metadata)
    return values, unknown
