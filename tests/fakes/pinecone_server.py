"""A stand-in for the part of Pinecone's REST API that the app uses, over real HTTP.

`FakePinecone` answers what search/vectorstores/pinecone.py sends through the `pinecone`
10.2.0 SDK, with bodies the SDK decodes as Pinecone's: list, create (serverless, one dense
cosine field, ready at once, `host` = `<url>/data/<name>`) and describe indexes; upsert,
query by vector (exact cosine, best first, ties by id), delete by ids, describe_index_stats
and list. Filters: `{field: {"$in": [...]}}`, fields ANDed, a list-valued field matching
when any element does. Pinecone's refusals that the store must stay inside: 400 `{"code":
3, ...}` for over 1000 vectors or 2 MiB per upsert, metadata over 40 KiB, null or nested,
a wrong dimension, an all-zero vector, over 1000 ids per delete, top_k outside 1..10000;
404 for a delete in an empty namespace; 401 without the right `Api-Key`. Values come back
as float32; an upsert replaces the whole record.

Anything else (fetch, query by id, deleteAll or filtered deletes, index deletion, other
filter operators, sparse vectors, other metrics) is answered 501 "does not emulate".

Faults: `fail_next(n, status, path_contains=..., retry_after=...)`, `delay_next(n,
seconds, ...)` (a request the client gave up on is still applied); `requests` records
each one; `reset_faults()`, `reset()`. The SDK retries the data plane on its own and
`Index` takes no retry config, which is why the store swaps its HTTP client
(tests/fakes/test_pinecone_server.py pins it). Statuses map to `pinecone.errors`: 400
`ApiError`, 401 `UnauthorizedError`, 404 `NotFoundError`, 409 `ConflictError`, 429
`RateLimitError`, 5xx `ServiceError`; an expired `timeout=` is `PineconeTimeoutError`.
"""

from __future__ import annotations

import array
import base64
import json
import math
import re
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
LIST_PAGE_SIZE = 100

# HTTP status -> (control-plane error code, gRPC status code used by the data plane).
_ERROR_CODES = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    404: ("NOT_FOUND", 5),
    409: ("ALREADY_EXISTS", 6),
    429: ("RESOURCE_EXHAUSTED", 8),
    501: ("UNIMPLEMENTED", 12),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    index: str | None  # the index a data-plane call addressed; None on the control plane
    body_bytes: int
    vector_count: int | None  # vectors in an upsert body, else None
    status: int


@dataclass
class _Index:
    name: str
    field_name: str
    dimension: int
    # namespace -> id -> (float32 values, metadata)
    namespaces: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = field(
        default_factory=dict
    )


class _Handler(KeepAliveHandler):
    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = KeepAliveHandler.serve


def _not_emulated(what: str) -> Refusal:
    return Refusal(501, f"FakePinecone does not emulate {what}: the app does not send it")


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

    def fail_next(
        self, n: int, status: int = 503, path_contains: str = "", retry_after: float | None = None
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
                id_: {"values": list(values), "metadata": dict(metadata)}
                for id_, (values, metadata) in records.items()
            }

    def _dispatch(self, handler: KeepAliveHandler, raw: bytes, failure: Fault | None) -> Response:
        url = urlsplit(handler.path)
        match = re.fullmatch(r"/data/([^/]+)(/.*)", url.path)
        index_name = unquote(match.group(1)) if match else None
        payload: Any = None
        vector_count = None
        try:
            if failure is not None and failure.status is not None:
                raise Refusal(failure.status, f"Injected failure {failure.status}")
            if handler.headers.get("Api-Key") != self.api_key:
                raise Refusal(401, "Invalid API Key")
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise Refusal(400, "Request body is not valid JSON") from exc
            if not isinstance(payload, dict):
                raise Refusal(400, "Request body must be a JSON object")
            with self._lock:
                if match is None:
                    status, body = self._control_plane(handler.command, url.path, payload)
                else:
                    query = parse_qs(url.query, keep_blank_values=True)
                    operation = (handler.command, match.group(2))
                    status, body = (
                        200,
                        self._data_plane(operation, index_name, payload, query, len(raw)),
                    )
        except Refusal as refusal:
            status, body = refusal.status, _error_body(refusal, data_plane=match is not None)
        except Exception:
            status, body = 500, _error_body(self._crash(), data_plane=match is not None)
        if isinstance(payload, dict) and isinstance(payload.get("vectors"), list):
            vector_count = len(payload["vectors"])
        number = self._record(
            RecordedRequest(handler.command, url.path, index_name, len(raw), vector_count, status)
        )
        encoded = b"" if body is None else json.dumps(body).encode()
        return Response(status, encoded, headers={"x-pinecone-request-id": str(number)})

    def _control_plane(self, method: str, path: str, payload: dict) -> tuple[int, Any]:
        if path == "/indexes" and method == "GET":
            return 200, {"indexes": [self._describe(index) for index in self._indexes.values()]}
        if path == "/indexes" and method == "POST":
            return 201, self._describe(self._create_index(payload))
        match = re.fullmatch(r"/indexes/([^/]+)", path)
        if match and method == "GET":
            index = self._indexes.get(unquote(match.group(1)))
            if index is None:
                raise Refusal(404, f"Resource {unquote(match.group(1))} not found")
            return 200, self._describe(index)
        raise _not_emulated(f"{method} {path}")

    def _create_index(self, payload: dict) -> _Index:
        name = payload.get("name")
        if name in self._indexes:
            raise Refusal(409, f"Resource {name} already exists")
        fields = (payload.get("schema") or {}).get("fields") or {}
        specs = list(fields.items())
        if len(specs) != 1 or not isinstance(specs[0][1], dict):
            raise _not_emulated("indexes without exactly one dense_vector field")
        field_name, spec = specs[0]
        if spec.get("type") != "dense_vector" or spec.get("metric", "cosine") != "cosine":
            raise _not_emulated(f"a {spec.get('type')} field with the {spec.get('metric')} metric")
        if (payload.get("deployment") or {}).get("deployment_type") != "managed":
            raise _not_emulated("pod or BYOC indexes")
        self._indexes[name] = _Index(name, field_name, spec["dimension"])
        return self._indexes[name]

    def _describe(self, index: _Index) -> dict[str, Any]:
        dense = {"type": "dense_vector", "dimension": index.dimension, "metric": "cosine"}
        return {
            "name": index.name,
            "host": self.index_host(index.name),
            "status": {"ready": True, "state": "Ready"},
            "schema": {"fields": {index.field_name: dense}},
            "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
            "read_capacity": {"mode": "OnDemand", "status": {"state": "Ready"}},
            "deletion_protection": "disabled",
            "tags": None,
        }

    def _data_plane(
        self, operation: tuple[str, str], name: str, payload: dict, query: dict, size: int
    ) -> Any:
        index = self._indexes.get(name)
        if index is None:
            raise Refusal(404, f"Index {name} not found")
        if operation == ("POST", "/vectors/upsert"):
            return self._upsert(index, payload, size)
        if operation == ("POST", "/query"):
            return self._query(index, payload)
        if operation == ("POST", "/vectors/delete"):
            return self._delete(index, payload)
        if operation == ("POST", "/describe_index_stats"):
            if payload.get("filter") is not None:
                raise _not_emulated("a describe_index_stats filter")
            return {
                "namespaces": {ns: {"vectorCount": len(r)} for ns, r in index.namespaces.items()},
                "dimension": index.dimension,
                "indexFullness": 0.0,
                "totalVectorCount": sum(len(r) for r in index.namespaces.values()),
                "metric": "cosine",
                "vectorType": "dense",
            }
        if operation == ("GET", "/vectors/list"):
            return self._list(index, query)
        raise _not_emulated(" ".join(operation))

    def _upsert(self, index: _Index, payload: dict, size: int) -> dict[str, Any]:
        if size > MAX_REQUEST_BYTES:
            raise Refusal(400, f"Request size {size / 2**20:.1f}MB exceeds the maximum of 2MB")
        vectors = payload["vectors"]
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise Refusal(400, f"Number of vectors ({len(vectors)}) exceeds the maximum of 1000")
        # Pinecone refuses the whole batch when one vector is bad, so check before writing.
        accepted = [_accept_vector(index, vector) for vector in vectors]
        records = index.namespaces.setdefault(_namespace(payload), {})
        for id_, values, metadata in accepted:
            records[id_] = (values, metadata)
        return {"upsertedCount": len(accepted)}

    def _query(self, index: _Index, payload: dict) -> dict[str, Any]:
        top_k = payload.get("topK")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise Refusal(400, f"topK must be an integer between 1 and {MAX_TOP_K}")
        if "vector" not in payload or payload.keys() & {"id", "sparseVector"}:
            raise _not_emulated("queries by id or sparse vector")
        vector = _float32(payload["vector"])
        if len(vector) != index.dimension:
            raise Refusal(400, f"Query vector dimension {len(vector)} does not match the index")
        keep = _compile_filter(payload.get("filter"))
        namespace = _namespace(payload)
        scored = sorted(
            (-_cosine(vector, values), id_, metadata)
            for id_, (values, metadata) in index.namespaces.get(namespace, {}).items()
            if keep(metadata)
        )
        matches = []
        for negative, id_, metadata in scored[:top_k]:
            match: dict[str, Any] = {"id": id_, "score": -negative, "values": []}
            if payload.get("includeMetadata") and metadata:
                match["metadata"] = metadata
            matches.append(match)
        return {"matches": matches, "namespace": namespace}

    def _delete(self, index: _Index, payload: dict) -> dict[str, Any]:
        ids = payload.get("ids")
        if payload.keys() & {"deleteAll", "filter"} or not isinstance(ids, list) or not ids:
            raise _not_emulated("deletes by anything but a list of ids")
        if len(ids) > MAX_IDS_PER_REQUEST:
            raise Refusal(400, f"Cannot delete more than {MAX_IDS_PER_REQUEST} ids in one request")
        namespace = _namespace(payload)
        records = index.namespaces.get(namespace)
        if records is None:
            raise Refusal(404, "Namespace not found")
        for id_ in ids:
            records.pop(id_, None)
        if not records:
            del index.namespaces[namespace]  # an emptied namespace disappears
        return {}

    def _list(self, index: _Index, query: dict[str, list[str]]) -> dict[str, Any]:
        namespace = _namespace({"namespace": query.get("namespace", [""])[0]})
        limit = query.get("limit", [str(LIST_PAGE_SIZE)])[0]
        if not limit.isdigit() or not 1 <= int(limit) <= LIST_PAGE_SIZE:
            raise Refusal(400, f"limit must be between 1 and {LIST_PAGE_SIZE}")
        after = base64.urlsafe_b64decode(query.get("paginationToken", [""])[0]).decode()
        ids = sorted(id_ for id_ in index.namespaces.get(namespace, {}) if id_ > after)
        page = ids[: int(limit)]
        body: dict[str, Any] = {"vectors": [{"id": id_} for id_ in page], "namespace": namespace}
        if len(ids) > len(page):
            body["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return body


def _error_body(refusal: Refusal, data_plane: bool) -> dict[str, Any]:
    name, grpc_code = _ERROR_CODES.get(refusal.status, ("UNKNOWN", 2))
    if data_plane:
        return {"code": grpc_code, "message": refusal.message, "details": []}
    return {"error": {"code": name, "message": refusal.message}, "status": refusal.status}


def _namespace(payload: dict) -> str:
    name = payload.get("namespace") or ""
    return "" if name == "__default__" else name


def _float32(values: Any) -> list[float]:
    """Pinecone stores float32, so what comes back is float32, not the float64 sent."""
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise Refusal(400, "Vector values must be a list of finite numbers")
    return array.array("f", values).tolist()


def _accept_vector(index: _Index, vector: Any) -> tuple[str, list[float], dict[str, Any]]:
    if not isinstance(vector, dict) or not isinstance(vector.get("id"), str):
        raise Refusal(400, "Each vector must be an object with a string id")
    if vector.get("sparseValues") is not None:
        raise _not_emulated("sparse values")
    id_, values = vector["id"], _float32(vector.get("values"))
    if len(values) != index.dimension:
        raise Refusal(400, f"Vector dimension {len(values)} does not match the index")
    if not any(values):
        raise Refusal(400, f"Dense vectors must contain at least one non-zero value ({id_!r})")
    metadata = vector.get("metadata") or {}
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise Refusal(400, f"Metadata size is {size} bytes, over the limit of 40960 per vector")
    for key, value in metadata.items():
        if not isinstance(value, (bool, str, int, float)) and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise Refusal(400, f"Bad metadata value: got '{json.dumps(value)}' for field '{key}'")
    # Pinecone keeps every number as a 64-bit float.
    stored = {k: float(v) if type(v) is int else v for k, v in metadata.items()}
    return id_, values, stored


def _cosine(query: list[float], values: list[float]) -> float:
    dot = sum(a * b for a, b in zip(query, values, strict=True))
    return dot / (math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in values)))


def _compile_filter(filter_: Any):
    """`{field: {"$in": [...]}, ...}` as a predicate on metadata; anything else is refused."""
    if filter_ is None:
        return lambda metadata: True
    clauses = []
    for key, condition in filter_.items():
        if key.startswith("$") or not isinstance(condition, dict) or condition.keys() != {"$in"}:
            raise _not_emulated(f"the filter {json.dumps({key: condition})} (only $in is)")
        options = condition["$in"]
        if not isinstance(options, list) or not options:
            raise Refusal(400, "$in must be followed by a non-empty array")
        clauses.append((key, options))

    def keep(metadata: dict[str, Any]) -> bool:
        for key, options in clauses:
            value = metadata.get(key)
            values = value if isinstance(value, list) else [value]
            if key not in metadata or not any(v in options for v in values):
                return False
        return True

    return keep
