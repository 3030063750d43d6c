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

    key = (settings.VECTOR_STORE, str(settings.VECTOR_STORE_PATH), DIMENSION)
    with _lock:
        if key not in _stores:
            _stores[key] = _build(*key)
        return _stores[key]


def _build(backend: str, path: str, dimension: int) -> VectorStore:
    if backend == "local":
        from search.vectorstores.local import LocalVectorStore

        return LocalVectorStore(path, dimension=dimension)
    raise VectorStoreError(f"Unknown VECTOR_STORE {backend!r}.")
