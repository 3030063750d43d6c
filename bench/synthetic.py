"""Synthetic 2048-d unit vectors shaped like pooled CNN image features.

Uniform random unit vectors have no clusters and a full intrinsic dimension, so an
approximate index's recall on them says nothing about recall on a catalog. These have
what ResNet features have (docs/design/approximate-index.md, "Data"): a shared positive
component (cosines crowd together), cluster centres with unequal cluster sizes, a
low-dimensional spread around each centre (48 directions with a decaying spectrum, so the
intrinsic dimension is a few tens) and small isotropic noise. Queries are fresh draws from
the same clusters: new photos of the same kinds of things.
"""

from __future__ import annotations

import numpy as np

DIMENSION = 2048
CLUSTERS = 2000
SUBSPACES = 24  # distinct local subspaces, shared between clusters (memory)
LOCAL_DIMENSION = 48
SEED = 19


class ImageLikeVectors:
    """A fixed family of clusters (from `seed`); `draw` samples vectors from it."""

    def __init__(self, seed: int = SEED, dimension: int = DIMENSION) -> None:
        rng = np.random.default_rng(seed)
        self.dimension = dimension
        self.mean = np.abs(rng.standard_normal(dimension)).astype(np.float32)
        self.mean *= 1.0 / np.linalg.norm(self.mean)
        centres = rng.standard_normal((CLUSTERS, dimension)).astype(np.float32)
        centres *= 0.9 / np.linalg.norm(centres, axis=1, keepdims=True)
        self.centres = centres
        bases = []
        for _ in range(SUBSPACES):
            q, _ = np.linalg.qr(rng.standard_normal((dimension, LOCAL_DIMENSION)))
            bases.append(q.T.astype(np.float32))  # (LOCAL_DIMENSION, dimension), orthonormal
        self.bases = np.stack(bases)
        # Decaying spectrum: the first directions carry most of the spread.
        spectrum = np.arange(1, LOCAL_DIMENSION + 1) ** -0.25  # variance ~ i^-0.5
        self.spectrum = (spectrum * 0.55 / np.linalg.norm(spectrum)).astype(np.float32)
        weights = rng.lognormal(0.0, 1.0, CLUSTERS)
        self.cluster_p = weights / weights.sum()
        self.noise = 0.25 / np.sqrt(dimension)

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` unit vectors, (count, dimension) float32."""
        cluster = rng.choice(CLUSTERS, size=count, p=self.cluster_p)
        z = rng.standard_normal((count, LOCAL_DIMENSION)).astype(np.float32) * self.spectrum
        out = np.empty((count, self.dimension), dtype=np.float32)
        for subspace in range(SUBSPACES):
            rows = np.flatnonzero(cluster % SUBSPACES == subspace)
            if len(rows):
                out[rows] = z[rows] @ self.bases[subspace]
        out += self.centres[cluster]
        out += self.mean
        out += rng.standard_normal((count, self.dimension), dtype=np.float32) * np.float32(
            self.noise
        )
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def exact_top(matrix: np.ndarray, queries: np.ndarray, k: int, rows=None) -> np.ndarray:
    """Exact top-k row numbers of `matrix` by inner product for each query, best first,
    computed blockwise (`rows`: only these row numbers compete)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    all_rows = np.arange(len(matrix)) if rows is None else np.asarray(rows)
    for start in range(0, len(all_rows), 20_000):
        block_rows = all_rows[start : start + 20_000]
        block = matrix[block_rows] if rows is not None else matrix[start : start + len(block_rows)]
        scores = queries @ np.asarray(block, dtype=np.float32).T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_rows = np.concatenate([best_rows, np.broadcast_to(block_rows, scores.shape)], axis=1)
        top = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, 1)
        best_rows = np.take_along_axis(merged_rows, top, 1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_rows, order, 1)
