"""Pinecone backend: a managed, distributed index behind the same `VectorStore` interface.

Talks to Pinecone through the official SDK. The SDK's own retries are switched off so that
one bounded policy applies to every call: transient failures (429, 5xx, timeouts, dropped
connections) are retried with exponential backoff and full jitter, then surface as
`VectorStoreError`, which the indexing task retries later and the search API turns into 503.
Left on, the SDK's retries (3 per request, plus a per-host retry budget shared by the whole
process) would multiply with ours and make the total wait depend on what ran before.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from search.vectorstores.base import (
    DimensionMismatch,
    VectorFilter,
    VectorMatch,
    VectorRecord,
    VectorStore,
    VectorStoreError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Pinecone's documented limits for one request and one record.
MAX_RECORDS_PER_UPSERT = 1000
MAX_UPSERT_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_IDS_PER_DELETE = 1000
# Leave room for the JSON around the records and for the SDK's own float formatting.
_UPSERT_BYTES_BUDGET = int(MAX_UPSERT_BYTES * 0.9)
_METADATA_BYTES_BUDGET = MAX_METADATA_BYTES - 1024


@dataclass(frozen=True)
class PineconeOptions:
    api_key: str
    index_name: str
    cloud: str = "aws"
    region: str = "us-east-1"
    namespace: str = ""
    host: str | None = None  # the control-plane API; None is Pinecone's own
    timeout: float = 10.0  # seconds per HTTP request
    max_retries: int = 4  # retries after the first attempt, for writes and reads
    query_max_retries: int = 1  # searches are interactive: fail fast, answer 503
    backoff_base: float = 0.5  # the first retry waits up to this long
    backoff_max: float = 20.0

    @classmethod
    def from_settings(cls) -> PineconeOptions:
        from django.conf import settings

        return cls(
            api_key=settings.PINECONE_API_KEY,
            index_name=settings.PINECONE_INDEX,
            cloud=settings.PINECONE_CLOUD,
            region=settings.PINECONE_REGION,
            namespace=settings.PINECONE_NAMESPACE,
            host=settings.PINECONE_HOST or None,
            timeout=settings.PINECONE_TIMEOUT,
            max_retries=settings.PINECONE_MAX_RETRIES,
        )


class PineconeVectorStore(VectorStore):
    """Cosine index in Pinecone; created on first use (or by `vectorstore_init`) if missing."""

    name = "pinecone"

    def __init__(self, options: PineconeOptions, dimension: int) -> None:
        from pinecone import Pinecone, RetryConfig

        self.options = options
        self.dimension = int(dimension)
        self._client = Pinecone(
            api_key=options.api_key,
            host=options.host,
            timeout=options.timeout,
            retry_config=RetryConfig(max_retries=0),
        )
        self._index = None
        self._index_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PineconeVectorStore(index={self.options.index_name!r})"

    # Index lifecycle

    def ensure_index(self, *, create: bool = True) -> dict[str, Any]:
        """Check (and if allowed, create) the index: dimension and metric must match ours."""
        from pinecone.errors import NotFoundError

        name = self.options.index_name
        try:
            description = self._retrying(
                "describe_index", lambda: self._client.describe_index(name)
            )
        except VectorStoreError as exc:
            if not isinstance(exc.__cause__, NotFoundError):
                raise
            if not create:
                raise VectorStoreError(
                    f"Pinecone index {name!r} does not exist; run: manage.py vectorstore_init"
                ) from exc
            description = self._create_index()
        if description.dimension != self.dimension or description.metric != "cosine":
            raise DimensionMismatch(
                f"Pinecone index {name!r} has dimension {description.dimension} and metric "
                f"{description.metric!r}, but this deployment needs {self.dimension} and "
                "'cosine'. Set PINECONE_INDEX to a new name and run manage.py vectorstore_init."
            )
        with self._index_lock:
            self._index = _without_sdk_retries(self._client.Index(host=description.host))
        return {
            "name": name,
            "host": description.host,
            "dimension": description.dimension,
            "metric": description.metric,
        }

    def _create_index(self):
        from pinecone import ServerlessSpec

        logger.info("Creating Pinecone index %s", self.options.index_name)
        return self._retrying(
            "create_index",
            lambda: self._client.create_index(
                name=self.options.index_name,
                dimension=self.dimension,
                metric="cosine",
                spec=ServerlessSpec(cloud=self.options.cloud, region=self.options.region),
                timeout=300,
            ),
        )

    def prepare(self) -> dict[str, Any]:
        return {"backend": self.name, **self.ensure_index(create=True), "count": self.count()}

    @property
    def index(self):
        if self._index is None:
            self.ensure_index(create=True)
        return self._index

    # The interface

    def upsert(self, records: Iterable[VectorRecord]) -> int:
        written = 0
        for batch in _upsert_batches(self._pinecone_records(records)):
            self._retrying(
                "upsert",
                lambda batch=batch: self.index.upsert(
                    vectors=batch, namespace=self.options.namespace
                ),
            )
            written += len(batch)
        return written

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for start in range(0, len(ids), MAX_IDS_PER_DELETE):
            chunk = ids[start : start + MAX_IDS_PER_DELETE]
            self._retrying(
                "delete",
                lambda chunk=chunk: self.index.delete(ids=chunk, namespace=self.options.namespace),
            )

    def query(
        self, vector: np.ndarray, top_k: int, where: VectorFilter | None = None
    ) -> list[VectorMatch]:
        self.check_dimension(vector)
        response = self._retrying(
            "query",
            lambda: self.index.query(
                vector=np.asarray(vector, dtype=np.float32).tolist(),
                top_k=top_k,
                filter=pinecone_filter(where),
                include_metadata=False,
                include_values=False,
                namespace=self.options.namespace,
            ),
            max_retries=self.options.query_max_retries,
        )
        return [VectorMatch(id=match.id, score=float(match.score)) for match in response.matches]

    def count(self) -> int:
        stats = self._retrying("describe_index_stats", lambda: self.index.describe_index_stats())
        if not self.options.namespace:
            return int(stats.total_vector_count)
        namespace = stats.namespaces.get(self.options.namespace)
        return int(namespace.vector_count) if namespace else 0

    def ids(self) -> set[str]:
        def every_id() -> set[str]:
            pages = self.index.list(namespace=self.options.namespace)
            return {item.id for page in pages for item in page.vectors}

        return self._retrying("list", every_id)

    # Helpers

    def _pinecone_records(self, records: Iterable[VectorRecord]) -> Iterator[dict[str, Any]]:
        for record in records:
            vector = np.asarray(record.vector, dtype=np.float32)
            self.check_dimension(vector)
            yield {
                "id": record.id,
                "values": vector.tolist(),
                "metadata": pinecone_metadata(record.metadata),
            }

    def _retrying(
        self, operation: str, call: Callable[[], T], *, max_retries: int | None = None
    ) -> T:
        """Run `call`, retrying transient failures with capped exponential backoff and jitter."""
        from pinecone.errors import (
            PineconeConnectionError,
            PineconeError,
            PineconeTimeoutError,
            RateLimitError,
            ServiceError,
        )

        retries = self.options.max_retries if max_retries is None else max_retries
        for attempt in range(retries + 1):
            try:
                return call()
            except (
                RateLimitError,
                ServiceError,
                PineconeTimeoutError,
                PineconeConnectionError,
            ) as exc:
                if attempt == retries:
                    raise VectorStoreError(
                        f"Pinecone {operation} failed after {attempt + 1} attempt(s): {exc}"
                    ) from exc
                delay = random.uniform(
                    0, min(self.options.backoff_max, self.options.backoff_base * 2**attempt)
                )
                retry_after = getattr(exc, "retry_after", None)
                if retry_after:
                    delay = max(delay, min(float(retry_after), self.options.backoff_max))
                logger.warning("Pinecone %s: %s; retrying in %.2f s", operation, exc, delay)
                time.sleep(delay)
            except PineconeError as exc:
                raise VectorStoreError(f"Pinecone {operation} refused: {exc}") from exc
        raise AssertionError("unreachable")


def pinecone_filter(where: VectorFilter | None) -> dict[str, Any] | None:
    """The interface's {field: [values]} as Pinecone's filter language.

    For a list-valued field such as tags, Pinecone's `$in` matches when any element is in
    the list, which is the interface's meaning; several fields are ANDed.
    """
    if not where:
        return None
    return {field: {"$in": [str(value) for value in values]} for field, values in where.items()}


def pinecone_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata Pinecone accepts: no nulls, strings/numbers/booleans/lists of strings, < 40 KB."""
    cleaned: dict[str, Any] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set)):
            cleaned[key] = [str(item) for item in value if item is not None]
        elif isinstance(value, (str, bool, int, float)):
            cleaned[key] = value
        else:
            cleaned[key] = str(value)
    while len(json.dumps(cleaned).encode()) > _METADATA_BYTES_BUDGET:
        # Shorten the longest string (a pathological title) rather than fail the upsert.
        key = max(
            (k for k, v in cleaned.items() if isinstance(v, str)),
            key=lambda k: len(cleaned[k]),
            default=None,
        )
        if key is None or len(cleaned[key]) < 64:
            raise VectorStoreError("Metadata is larger than Pinecone's 40 KB per record.")
        cleaned[key] = cleaned[key][: len(cleaned[key]) // 2]
    return cleaned


def _upsert_batches(records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Requests within Pinecone's limits: at most 1,000 records and about 2 MB of JSON."""
    batch: list[dict[str, Any]] = []
    size = 0
    for record in records:
        record_size = len(json.dumps(record, separators=(",", ":")).encode())
        if batch and (
            len(batch) == MAX_RECORDS_PER_UPSERT or size + record_size > _UPSERT_BYTES_BUDGET
        ):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_size + 1
    if batch:
        yield batch


def _without_sdk_retries(index):
    """The data-plane client, made not to retry on its own.

    pinecone 10.2.0 gives every REST `Index` the default RetryConfig, and neither
    `Pinecone.Index` nor `Index` takes another, so this swaps the private HTTP client for
    one built with retries off. If a later SDK moves those internals, the index is used as
    it is (SDK retries inside ours) and a warning says so;
    tests/search/test_pinecone_store.py::test_only_the_stores_retry_policy_applies fails then.
    """
    try:
        from dataclasses import replace

        from pinecone import RetryConfig
        from pinecone._internal.constants import DATA_PLANE_API_VERSION
        from pinecone._internal.http_client import HTTPClient

        config = replace(index._config, retry_config=RetryConfig(max_retries=0))
        client = HTTPClient(config, DATA_PLANE_API_VERSION)
    except (ImportError, AttributeError, TypeError) as exc:
        logger.warning("Could not turn off the Pinecone SDK's own retries (%s)", exc)
        return index
    index._http.close()
    index._http = client
    return index
