"""The configured vector store, one instance per process and configuration."""

from __future__ import annotations

import threading

from search.vectorstores.base import (
    DimensionMismatch,
    VectorFilter,
    VectorMatch,
    VectorRecord,
    VectorStore,
    VectorStoreError,
)

__all__ = [
    "DimensionMismatch",
    "VectorFilter",
    "VectorMatch",
    "VectorRecord",
    "VectorStore",
    "VectorStoreError",
    "get_vector_store",
]

_stores: dict[tuple, VectorStore] = {}
_lock = threading.Lock()


def get_vector_store() -> VectorStore:
    """The store chosen by VECTOR_STORE; cached so its in-memory index is reused."""
    from django.conf import settings

    from search.embedding import DIMENSION

    if settings.VECTOR_STORE == "pinecone":
        from search.vectorstores.pinecone import PineconeOptions, PineconeVectorStore

        options = PineconeOptions.from_settings()
        return _cached(("pinecone", options), lambda: PineconeVectorStore(options, DIMENSION))

    from search.vectorstores.local import LocalVectorStore

    path = str(settings.VECTOR_STORE_PATH)
    mode, exact_below = settings.LOCAL_STORE_INDEX, settings.LOCAL_STORE_EXACT_BELOW
    precision = settings.LOCAL_STORE_PRECISION
    return _cached(
        ("local", path, mode, exact_below, precision),
        lambda: LocalVectorStore(
            path,
            dimension=DIMENSION,
            index_mode=mode,
            exact_below=exact_below,
            precision=precision,
        ),
    )


def _cached(key: tuple, build) -> VectorStore:
    with _lock:
        if key not in _stores:
            _stores[key] = build()
        return _stores[key]
