"""The interface every vector store backend implements.

A vector store is an index, not the truth: the catalog rows keep their embeddings, so any
store can be rebuilt from the database (`reindex --from-cache`) without running the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A filter (`query`'s `where`) maps a metadata field to the values it may take: a record
# matches when, for every field, its value (or, for list-valued metadata such as tags, any
# of its values) is one of the given values. `{"tags": ["beach"]}` keeps records tagged "beach".
VectorFilter = Mapping[str, Sequence[str]]


class VectorStoreError(Exception):
    """The store could not do what was asked (unreachable, refused, misconfigured)."""


class DimensionMismatch(VectorStoreError):
    """A vector's dimension differs from the store's."""


@dataclass(frozen=True)
class VectorRecord:
    id: str
    vector: np.ndarray  # float32, shape (dimension,), L2-normalised by the caller
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorMatch:
    id: str
    score: float  # cosine similarity, higher is closer


class VectorStore(ABC):
    """Cosine-similarity index of fixed-dimension vectors keyed by string ids."""

    name: str = ""
    dimension: int

    @abstractmethod
    def upsert(self, records: Iterable[VectorRecord]) -> int:
        """Insert or replace records by id; returns how many were written."""

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> None:
        """Remove records by id; unknown ids are ignored."""

    @abstractmethod
    def query(
        self, vector: np.ndarray, top_k: int, where: VectorFilter | None = None
    ) -> list[VectorMatch]:
        """The `top_k` closest records, best first."""

    def query_many(
        self, vectors: np.ndarray, top_k: int, where: VectorFilter | None = None
    ) -> list[list[VectorMatch]]:
        """What `query` answers for each row of `vectors` (shape (n, dimension)), in order.

        A backend that can read its index once for the whole batch overrides this; the
        default asks `query` once per vector.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        self.check_dimensions(vectors)
        return [self.query(vector, top_k, where) for vector in vectors]

    @abstractmethod
    def count(self) -> int:
        """How many records the store holds."""

    @abstractmethod
    def ids(self) -> set[str]:
        """Every id in the store (used by reconciliation)."""

    def prepare(self) -> dict[str, Any]:
        """Create the index if it is missing, check that it fits, and describe it."""
        return {"backend": self.name, "dimension": self.dimension, "count": self.count()}

    def check_dimension(self, vector: np.ndarray) -> None:
        if vector.ndim != 1 or vector.shape[0] != self.dimension:
            raise DimensionMismatch(
                f"Vector has shape {tuple(vector.shape)}, but this store holds "
                f"{self.dimension}-dimensional vectors."
            )

    def check_dimensions(self, vectors: np.ndarray) -> None:
        """`check_dimension` for a batch: one vector per row."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise DimensionMismatch(
                f"Vectors have shape {tuple(vectors.shape)}, but this store takes "
                f"(n, {self.dimension}): one {self.dimension}-dimensional vector per row."
            )
