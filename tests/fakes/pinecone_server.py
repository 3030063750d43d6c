"""A small, honest stand-in for Pinecone's REST API, served over real HTTP for tests.

`FakePinecone` listens on 127.0.0.1 and answers the calls the official `pinecone` 10.2.0
Python SDK makes (API version 2026-07), with bodies the SDK decodes as it would Pinecone's:

- control plane: list, create (201), describe (404 when missing), delete (202) indexes.
  Indexes are serverless ("managed") with one dense vector field, cosine or dotproduct;
  they are ready at once, and their `host` is `<url>/data/<name>` on this same server
  (a path where Pinecone gives each index its own hostname; the SDK accepts both).
- data plane: `/vectors/upsert`, `/query` (exact scores, best first, ties by id),
  `/vectors/fetch`, `/vectors/delete` (ids, deleteAll or filter), `/describe_index_stats`,
  `/vectors/list` (ids in order, paginated with an opaque token, 100 per page at most).
- metadata filters: `$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or` and implicit
  equality. On a list-valued field `$eq`/`$in` match when any element matches and
  `$ne`/`$nin` when none does; a record without the field never matches `$ne`/`$nin`.
- refusals as Pinecone answers them (status and error body shape; the wording is close
  to Pinecone's, not guaranteed identical). Data plane: 400 `{"code": 3, "message": ...,
  "details": []}` for more than 1000 vectors or 2 MiB per upsert, metadata over 40 KiB
  per record, null or nested metadata values, a wrong dimension, an all-zero vector, more
  than 1000 ids per delete or fetch, top_k outside 1..10000, a stats filter (serverless
  has none); 404 for a delete in a namespace that holds nothing. Control plane: `{"error":
  {"code": ..., "message": ...}, "status": ...}` with 400, 404, 409 (exists), 403
  (deletion protection). Any request without the right `Api-Key` header gets a 401.
  Two of these are judgement calls. Null metadata: public reports show Pinecone answering
  400 "got 'null' for field ...", while a comment in the 10.2.0 SDK says the server now
  drops null keys; the fake refuses, the stricter of the two. Over 2 MB: reports show a
  400; the SDK also maps a 413 (a proxy's answer to huge bodies) to PayloadTooLargeError.
- what Pinecone does to data: values come back as float32, numeric metadata as floats,
  an upsert replaces the whole record, an emptied namespace disappears, and a request
  that a client gave up on (timeout) is still applied once its delay has passed.

It does not implement sparse or hybrid vectors, gRPC, pod or BYOC indexes, integrated
inference, records/documents/search endpoints, `update`, namespaces/imports/backups/
collections endpoints, configure, euclidean scores, read units or usage, rate limits
(inject them), LSN headers, or eventual consistency: every write is visible at once.

Fault injection: `fail_next(n, status, path_contains=...)` answers the next n matching
requests with that status and a Pinecone-shaped body (optionally with `Retry-After`);
`delay_next(n, seconds, path_contains=...)` holds them before answering. `requests`
records every request (method, path, index, body size, vector count, status).
`reset_faults()` forgets pending faults; `reset()` also drops indexes and records. The
server, its thread and the fault queue are shared with the other fakes (http_fake.py).

What the SDK does on its own (pinecone 10.2.0, read from its source):

- `RetryConfig()` defaults to 3 retries (4 attempts) on 408, 429, 500, 502, 503, 504 and
  on connection errors and timeouts, sleeping uniform(0.25, 3 x previous) s, capped at
  60 s, or `Retry-After` plus up to 50 % more. A process-wide budget per host (100
  tokens, 1 per retryable failure, 0.1 back per success, no retries at or below 50)
  silently stops retries once enough failures pile up; every server here is 127.0.0.1.
- `Pinecone(retry_config=RetryConfig(max_retries=0))` switches retries off for the
  control plane only. `pc.Index(...)`/`pc.index(...)` build a REST `Index` from the
  client's key, timeout and headers but not its retry config, and `Index` has no
  parameter for one: the data plane always retries with the defaults above. The tests
  in tests/search/test_fake_pinecone.py show this and a (private-API) way around it.
- `timeout=` (client or per call) bounds one attempt; an expired one raises
  `pinecone.errors.PineconeTimeoutError` (after the retries, on the data plane).
- Statuses map to `pinecone.errors` classes: 400 `ApiError`, 401 `UnauthorizedError`,
  403 `ForbiddenError`, 404 `NotFoundError`, 409 `ConflictError`, 413
  `PayloadTooLargeError`, 429 `RateLimitError`, 5xx `ServiceError`. The SDK passes
  `None` metadata values through untouched and checks top_k (1..10000) itself.
"""

from __future__ import annotations

import array
import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.http_fake import FakeHTTPServer, Fault, KeepAliveHandler, Refusal, Response

# Pinecone's documented hard limits (docs.pinecone.io, "Database limits").
MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_IDS_PER_REQUEST = 1000
MAX_TOP_K = 10_000
MAX_ID_LENGTH = 512
MAX_DIMENSION = 20_000
LIST_PAGE_SIZE = 100

DEFAULT_NAMESPACE_ALIAS = "__default__"
_INDEX_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")

# HTTP status -> (control-plane error code, gRPC status code used by the data plane).
_ERROR_CODES = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("FORBIDDEN", 7),
    404: ("NOT_FOUND", 5),
    409: ("ALREADY_EXISTS", 6),
    429: ("RESOURCE_EXHAUSTED", 8),
    500: ("UNKNOWN", 13),
    502: ("UNAVAILABLE", 14),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    index: str | None  # the index a data-plane call addressed; None on the control plane
    body_bytes: int
    vector_count: int | None  # vectors in an upsert body, else None
    status: int
    api_version: str | None


@dataclass
class _Index:
    name: str
    field_name: str
    dimension: int
    metric: str
    cloud: str
    region: str
    deletion_protection: str
    tags: dict[str, str] | None
    # namespace -> id -> (float32 values, metadata or None)
    namespaces: dict[str, dict[str, tuple[list[float], dict[str, Any] | None]]] = field(
        default_factory=dict
    )


class _Handler(KeepAliveHandler):
    # The methods the SDK uses; any other gets http.server's 501.
    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = KeepAliveHandler.serve


class FakePinecone(FakeHTTPServer[RecordedRequest]):
    """One fake Pinecone project; use as a context manager or call start()/stop()."""

    handler_class = _Handler
    thread_name = "fake-pinecone"

    def __init__(self, api_key: str = "test-key", port: int = 0) -> None:
        super().__init__(port)
        self.api_key = api_key
        self._indexes: dict[str, _Index] = {}

    def reset(self) -> None:
        """Drop every index, injected fault, recorded request and still-delayed request."""
        with self._lock:
            super().reset()
            self._indexes.clear()

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 503,
        path_contains: str = "",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n requests whose path contains `path_contains` with `status`."""
        self._add_fault(Fault(n, path_contains, status=status, retry_after=retry_after))

    def index_host(self, name: str) -> str:
        return f"{self.url}/data/{name}"

    def vectors(self, index: str, namespace: str = "") -> dict[str, dict[str, Any]]:
        """What an index holds in a namespace: id -> {"values", "metadata"}."""
        with self._lock:
            records = self._indexes[index].namespaces.get(namespace, {})
            return {
                id_: {"values": list(values), "metadata": dict(metadata or {})}
                for id_, (values, metadata) in records.items()
            }

    # -- request handling ------------------------------------------------------------------

    def _dispatch(self, handler: KeepAliveHandler, raw: bytes, failure: Fault | None) -> Response:
        url = urlsplit(handler.path)
        path = url.path
        index_name, operation = _split_data_path(path)
        payload = _parse_json(raw)
        vector_count = None
        if operation == "/vectors/upsert" and isinstance(payload, dict):
            vectors = payload.get("vectors")
            vector_count = len(vectors) if isinstance(vectors, list) else None

        try:
            if failure is not None and failure.status is not None:
                raise Refusal(failure.status, _INJECTED_MESSAGES.get(failure.status, "Injected"))
            if handler.headers.get("Api-Key") != self.api_key:
                raise Refusal(401, "Invalid API Key")
            if payload is _INVALID_JSON:
                raise Refusal(400, "Request body is not valid JSON")
            query = parse_qs(url.query, keep_blank_values=True)
            with self._lock:
                if index_name is None:
                    status, body = self._control_plane(handler.command, path, payload)
                else:
                    status, body = self._data_plane(
                        handler.command, index_name, operation, payload, query, len(raw)
                    )
        except Refusal as refusal:
            status, body = refusal.status, _error_body(refusal, data_plane=index_name is not None)
        except Exception:
            crash = self._crash()
            status, body = 500, _error_body(crash, data_plane=index_name is not None)

        request_number = self._record(
            RecordedRequest(
                method=handler.command,
                path=path,
                index=index_name,
                body_bytes=len(raw),
                vector_count=vector_count,
                status=status,
                api_version=handler.headers.get("X-Pinecone-Api-Version"),
            )
        )
        encoded = b"" if body is None else json.dumps(body).encode()
        return Response(status, encoded, headers={"x-pinecone-request-id": str(request_number)})

    # -- control plane ---------------------------------------------------------------------

    def _control_plane(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
        if path == "/indexes" and method == "GET":
            return 200, {"indexes": [self._describe(index) for index in self._indexes.values()]}
        if path == "/indexes" and method == "POST":
            index = self._create_index(payload)
            return 201, self._describe(index)
        match = re.fullmatch(r"/indexes/([^/]+)", path)
        if match and method in ("GET", "DELETE"):
            name = unquote(match.group(1))
            index = self._indexes.get(name)
            if index is None:
                raise Refusal(404, f"Resource {name} not found")
            if method == "GET":
                return 200, self._describe(index)
            if index.deletion_protection == "enabled":
                raise Refusal(403, "Deletion protection is enabled for this index")
            del self._indexes[name]
            return 202, None
        raise Refusal(404, f"FakePinecone does not implement {method} {path}")

    def _create_index(self, payload: Any) -> _Index:
        if not isinstance(payload, dict):
            raise Refusal(400, "Request body must be a JSON object")
        name = payload.get("name")
        if not isinstance(name, str) or not _INDEX_NAME.match(name):
            raise Refusal(
                400,
                "Name must be 1-45 lowercase alphanumeric characters or '-', "
                "starting and ending with an alphanumeric character",
            )
        if name in self._indexes:
            raise Refusal(409, f"Resource {name} already exists")
        fields = (payload.get("schema") or {}).get("fields") or {}
        dense = [
            (key, spec)
            for key, spec in fields.items()
            if isinstance(spec, dict) and spec.get("type") == "dense_vector"
        ]
        if len(fields) != 1 or len(dense) != 1:
            raise Refusal(400, "FakePinecone serves indexes with exactly one dense_vector field")
        field_name, spec = dense[0]
        dimension, metric = spec.get("dimension"), spec.get("metric", "cosine")
        if not isinstance(dimension, int) or not 1 <= dimension <= MAX_DIMENSION:
            raise Refusal(400, f"Dimension must be between 1 and {MAX_DIMENSION}")
        if metric not in ("cosine", "dotproduct"):
            raise Refusal(400, f"FakePinecone does not implement the {metric!r} metric")
        deployment = payload.get("deployment") or {}
        if deployment.get("deployment_type") != "managed":
            raise Refusal(400, "FakePinecone serves serverless (managed) indexes only")
        index = _Index(
            name=name,
            field_name=field_name,
            dimension=dimension,
            metric=metric,
            cloud=deployment.get("cloud", "aws"),
            region=deployment.get("region", "us-east-1"),
            deletion_protection=payload.get("deletion_protection") or "disabled",
            tags=payload.get("tags"),
        )
        self._indexes[name] = index
        return index

    def _describe(self, index: _Index) -> dict[str, Any]:
        return {
            "name": index.name,
            "host": self.index_host(index.name),
            "status": {"ready": True, "state": "Ready"},
            "schema": {
                "fields": {
                    index.field_name: {
                        "type": "dense_vector",
                        "dimension": index.dimension,
                        "metric": index.metric,
                    }
                }
            },
            "deployment": {
                "deployment_type": "managed",
                "cloud": index.cloud,
                "region": index.region,
            },
            "read_capacity": {"mode": "OnDemand", "status": {"state": "Ready"}},
            "deletion_protection": index.deletion_protection,
            "tags": index.tags,
        }

    # -- data plane ------------------------------------------------------------------------

    def _data_plane(
        self,
        method: str,
        index_name: str,
        operation: str,
        payload: Any,
        query: dict[str, list[str]],
        body_bytes: int,
    ) -> tuple[int, Any]:
        index = self._indexes.get(index_name)
        if index is None:
            raise Refusal(404, f"Index {index_name} not found")
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("POST", "/vectors/upsert"): lambda: self._upsert(index, payload, body_bytes),
            ("POST", "/query"): lambda: self._query(index, payload),
            ("GET", "/vectors/fetch"): lambda: self._fetch(index, query),
            ("POST", "/vectors/delete"): lambda: self._delete(index, payload),
            ("POST", "/describe_index_stats"): lambda: self._stats(index, payload),
            ("GET", "/vectors/list"): lambda: self._list(index, query),
        }
        route = routes.get((method, operation))
        if route is None:
            raise Refusal(404, f"FakePinecone does not implement {method} {operation}")
        return 200, route()

    def _upsert(self, index: _Index, payload: Any, body_bytes: int) -> dict[str, Any]:
        if body_bytes > MAX_REQUEST_BYTES:
            raise Refusal(
                400,
                f"Request size {body_bytes / 1024 / 1024:.1f}MB exceeds the maximum "
                "supported size of 2MB",
            )
        vectors = _require_object(payload).get("vectors")
        if not isinstance(vectors, list):
            raise Refusal(400, "vectors must be a list")
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise Refusal(
                400,
                f"Number of vectors ({len(vectors)}) exceeds the maximum of "
                f"{MAX_UPSERT_VECTORS} per upsert request",
            )
        # Pinecone refuses the whole batch when one vector is bad, so validate before writing.
        accepted = [self._accept_vector(index, vector) for vector in vectors]
        namespace = _namespace(payload.get("namespace"))
        records = index.namespaces.setdefault(namespace, {})
        for id_, values, metadata in accepted:
            records[id_] = (values, metadata)
        if not records:
            del index.namespaces[namespace]
        return {"upsertedCount": len(accepted)}

    def _accept_vector(
        self, index: _Index, vector: Any
    ) -> tuple[str, list[float], dict[str, Any] | None]:
        if not isinstance(vector, dict):
            raise Refusal(400, "Each vector must be an object")
        id_ = _require_id(vector.get("id"))
        if vector.get("sparseValues") is not None:
            raise Refusal(400, "FakePinecone does not implement sparse values")
        values = _float32(vector.get("values"), f"Vector {id_!r} values")
        if len(values) != index.dimension:
            raise Refusal(
                400,
                f"Vector dimension {len(values)} does not match the dimension of the index "
                f"{index.dimension}",
            )
        if not any(values):
            raise Refusal(
                400,
                "Dense vectors must contain at least one non-zero value. "
                f"Vector ID '{id_}' contains only zeros",
            )
        metadata = vector.get("metadata")
        if metadata is None:
            return id_, values, None
        if not isinstance(metadata, dict):
            raise Refusal(400, "Metadata must be an object")
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise Refusal(
                400,
                f"Metadata size is {size} bytes, which exceeds the limit of "
                f"{MAX_METADATA_BYTES} bytes per vector",
            )
        return id_, values, {key: _metadata_value(key, value) for key, value in metadata.items()}

    def _query(self, index: _Index, payload: Any) -> dict[str, Any]:
        payload = _require_object(payload)
        top_k = payload.get("topK")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise Refusal(400, f"topK must be an integer between 1 and {MAX_TOP_K}")
        if payload.get("sparseVector") is not None:
            raise Refusal(400, "FakePinecone does not implement sparse queries")
        namespace = _namespace(payload.get("namespace"))
        records = index.namespaces.get(namespace, {})
        if ("vector" in payload) == ("id" in payload):
            raise Refusal(400, "Exactly one of vector or id must be provided")
        if "id" in payload:
            found = records.get(payload["id"])
            if found is None:
                return {"matches": [], "namespace": namespace}
            query_vector = found[0]
        else:
            query_vector = _float32(payload["vector"], "Query vector")
        if len(query_vector) != index.dimension:
            raise Refusal(
                400,
                f"Query vector dimension {len(query_vector)} does not match the dimension "
                f"of the index {index.dimension}",
            )
        keep = _compile_filter(payload.get("filter"))
        scored = [
            (_score(index.metric, query_vector, values), id_, values, metadata)
            for id_, (values, metadata) in records.items()
            if keep(metadata or {})
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        matches = []
        for score, id_, values, metadata in scored[:top_k]:
            match: dict[str, Any] = {"id": id_, "score": score, "values": []}
            if payload.get("includeValues"):
                match["values"] = values
            if payload.get("includeMetadata") and metadata:
                match["metadata"] = metadata
            matches.append(match)
        return {"matches": matches, "namespace": namespace}

    def _fetch(self, index: _Index, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids", [])
        if not ids:
            raise Refusal(400, "Must provide at least one id to fetch")
        if len(ids) > MAX_IDS_PER_REQUEST:
            raise Refusal(400, f"Cannot fetch more than {MAX_IDS_PER_REQUEST} ids at once")
        namespace = _namespace(query.get("namespace", [""])[0])
        records = index.namespaces.get(namespace, {})
        vectors = {}
        for id_ in ids:
            if id_ in records:
                values, metadata = records[id_]
                vectors[id_] = {"id": id_, "values": values}
                if metadata:
                    vectors[id_]["metadata"] = metadata
        return {"vectors": vectors, "namespace": namespace}

    def _delete(self, index: _Index, payload: Any) -> dict[str, Any]:
        payload = _require_object(payload)
        ids, filter_ = payload.get("ids"), payload.get("filter")
        delete_all = payload.get("deleteAll") is True
        if [ids is not None, delete_all, filter_ is not None].count(True) != 1:
            raise Refusal(400, "Exactly one of ids, deleteAll or filter must be provided")
        if ids is not None:
            if not isinstance(ids, list) or not ids:
                raise Refusal(400, "ids must be a non-empty list")
            if len(ids) > MAX_IDS_PER_REQUEST:
                raise Refusal(
                    400, f"Cannot delete more than {MAX_IDS_PER_REQUEST} ids in one request"
                )
        keep = _compile_filter(filter_)  # refuses a bad filter before anything is deleted
        namespace = _namespace(payload.get("namespace"))
        records = index.namespaces.get(namespace)
        if records is None:
            raise Refusal(404, "Namespace not found")
        if ids is not None:
            doomed = [id_ for id_ in ids if id_ in records]
        else:
            doomed = [id_ for id_, (_, metadata) in records.items() if keep(metadata or {})]
        for id_ in doomed:
            del records[id_]
        if not records:
            del index.namespaces[namespace]
        return {}

    def _stats(self, index: _Index, payload: Any) -> dict[str, Any]:
        if isinstance(payload, dict) and payload.get("filter") is not None:
            raise Refusal(400, "Serverless indexes do not support filtering describe_index_stats")
        namespaces = {
            name: {"vectorCount": len(records)} for name, records in index.namespaces.items()
        }
        return {
            "namespaces": namespaces,
            "dimension": index.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(len(records) for records in index.namespaces.values()),
            "metric": index.metric,
            "vectorType": "dense",
        }

    def _list(self, index: _Index, query: dict[str, list[str]]) -> dict[str, Any]:
        namespace = _namespace(query.get("namespace", [""])[0])
        prefix = query.get("prefix", [""])[0]
        try:
            limit = int(query.get("limit", [str(LIST_PAGE_SIZE)])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= LIST_PAGE_SIZE:
            raise Refusal(400, f"limit must be between 1 and {LIST_PAGE_SIZE}")
        after = ""
        if token := query.get("paginationToken", [""])[0]:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError as exc:
                raise Refusal(400, "Invalid pagination token") from exc
        ids = sorted(
            id_
            for id_ in index.namespaces.get(namespace, {})
            if id_.startswith(prefix) and id_ > after
        )
        page = ids[:limit]
        body: dict[str, Any] = {"vectors": [{"id": id_} for id_ in page], "namespace": namespace}
        if len(ids) > limit:
            body["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return body


# -- helpers -------------------------------------------------------------------------------

_INVALID_JSON = object()
_INJECTED_MESSAGES = {
    429: "Request failed. You've reached your rate limit. Retry after a short wait.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def _split_data_path(path: str) -> tuple[str | None, str]:
    """`/data/<index>/<operation>` -> (index, `/<operation>`); anything else is control plane."""
    match = re.fullmatch(r"/data/([^/]+)(/.*)", path)
    if match is None:
        return None, path
    return unquote(match.group(1)), match.group(2)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return _INVALID_JSON


def _error_body(refusal: Refusal, data_plane: bool) -> dict[str, Any]:
    name, grpc_code = _ERROR_CODES.get(refusal.status, ("UNKNOWN", 2))
    if data_plane:
        return {"code": grpc_code, "message": refusal.message, "details": []}
    return {"error": {"code": name, "message": refusal.message}, "status": refusal.status}


def _require_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise Refusal(400, "Request body must be a JSON object")
    return payload


def _require_id(id_: Any) -> str:
    if not isinstance(id_, str) or not 1 <= len(id_) <= MAX_ID_LENGTH:
        raise Refusal(400, f"Vector id must be a string of 1 to {MAX_ID_LENGTH} characters")
    return id_


def _namespace(name: Any) -> str:
    if name is None or name == DEFAULT_NAMESPACE_ALIAS:
        return ""
    if not isinstance(name, str):
        raise Refusal(400, "namespace must be a string")
    return name


def _float32(values: Any, what: str) -> list[float]:
    """Pinecone stores float32, so what comes back is float32, not the float64 sent."""
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise Refusal(400, f"{what} must be a list of finite numbers")
    return array.array("f", values).tolist()


def _metadata_value(key: str, value: Any) -> Any:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)  # Pinecone keeps every number as a 64-bit float
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    rendered = "null" if value is None else json.dumps(value)
    raise Refusal(
        400,
        "Metadata value must be a string, number, boolean or list of strings, "
        f"got '{rendered}' for field '{key}'",
    )


def _score(metric: str, query: list[float], values: list[float]) -> float:
    dot = sum(a * b for a, b in zip(query, values, strict=True))
    if metric == "dotproduct":
        return dot
    norms = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in values))
    return dot / norms if norms else 0.0


def _same(a: Any, b: Any) -> bool:
    """Equality without Python's True == 1: Pinecone compares booleans only to booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _scalar(value: Any, operator: str) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise Refusal(400, f"{operator} must be followed by a string, number or boolean")
    return value


def _compile_filter(filter_: Any) -> Callable[[Mapping[str, Any]], bool]:
    """Turn a Pinecone filter into a predicate on metadata, refusing what Pinecone refuses."""
    if filter_ is None:
        return lambda metadata: True
    if not isinstance(filter_, dict) or not filter_:
        raise Refusal(400, "Filter must be a non-empty object")
    clauses: list[Callable[[Mapping[str, Any]], bool]] = []
    for key, condition in filter_.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise Refusal(400, f"{key} must be followed by a non-empty array")
            parts = [_compile_filter(part) for part in condition]
            combine = all if key == "$and" else any
            clauses.append(lambda md, parts=parts, combine=combine: combine(p(md) for p in parts))
        elif key.startswith("$"):
            raise Refusal(400, f"Unsupported filter operator {key}")
        elif isinstance(condition, dict):
            for operator, operand in condition.items():
                clauses.append(_field_clause(key, operator, operand))
        else:
            clauses.append(_field_clause(key, "$eq", condition))
    return lambda metadata: all(clause(metadata) for clause in clauses)


def _field_clause(key: str, operator: str, operand: Any) -> Callable[[Mapping[str, Any]], bool]:
    def any_element(value: Any, test: Callable[[Any], bool]) -> bool:
        return any(test(item) for item in value) if isinstance(value, list) else test(value)

    if operator == "$exists":
        if not isinstance(operand, bool):
            raise Refusal(400, "$exists must be followed by a boolean")
        return lambda md: (key in md) == operand
    if operator in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise Refusal(400, f"{operator} must be followed by a non-empty array")
        options = [_scalar(option, operator) for option in operand]

        def in_options(value: Any) -> bool:
            return any(_same(value, option) for option in options)

        if operator == "$in":
            return lambda md: key in md and any_element(md[key], in_options)
        return lambda md: key in md and not any_element(md[key], in_options)
    if operator in ("$eq", "$ne"):
        target = _scalar(operand, operator)
        if operator == "$eq":
            return lambda md: key in md and any_element(md[key], lambda v: _same(v, target))
        return lambda md: key in md and not any_element(md[key], lambda v: _same(v, target))
    comparisons: dict[str, Callable[[float, float], bool]] = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }
    if operator in comparisons:
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise Refusal(400, f"{operator} must be followed by a number")
        compare = comparisons[operator]
        return lambda md: (
            isinstance(md.get(key), (int, float))
            and not isinstance(md.get(key), bool)
            and compare(md[key], operand)
        )
    raise Refusal(400, f"Unsupported filter operator {operator}")
