"""Exact nearest-neighbour search over item embeddings, updated as items arrive.

Rows are catalogue indices, so the blend can score every item with one matrix product. Exact
float32 search is one ``queries @ matrix.T`` and an ``argpartition``; ``benchmarks/uploads.py``
measures it at 10k, 100k and 1M items (see the README for where it stops being fast enough).
"""

from __future__ import annotations

import numpy as np

from streamrec.online_models.catalog import grow_rows


class EmbeddingIndex:
    """A growable ``n_items x dim`` float32 matrix with a mask of rows that hold a vector.

    >>> idx = EmbeddingIndex(dim=2)
    >>> idx.add(0, np.array([1.0, 0.0])); idx.add(2, np.array([0.6, 0.8]))
    >>> idx.search(np.array([[0.0, 1.0]]), k=1).tolist()
    [[2]]
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.matrix = np.zeros((1024, dim), np.float32)
        self.has = np.zeros(1024, bool)
        self.count = 0

    def add(self, row: int, vector: np.ndarray) -> None:
        self.matrix = grow_rows(self.matrix, row + 1)
        self.has = grow_rows(self.has, row + 1)
        self.count += not self.has[row]
        self.matrix[row] = vector
        self.has[row] = True

    def __contains__(self, row: int) -> bool:
        return row < len(self.has) and bool(self.has[row])

    def scores(self, queries: np.ndarray, n: int) -> np.ndarray:
        """``queries x n`` inner products with the first ``n`` rows; rows without a vector
        score ``-inf``."""
        self.matrix = grow_rows(self.matrix, n)
        self.has = grow_rows(self.has, n)
        S = np.asarray(queries, np.float32) @ self.matrix[:n].T
        # One broadcast add rather than a column-wise fancy assignment (3x faster).
        S += np.where(self.has[:n], np.float32(0.0), np.float32(-np.inf))
        return S

    def search(self, queries: np.ndarray, k: int, n: int | None = None) -> np.ndarray:
        """The ``k`` nearest rows of each query, nearest first."""
        n = len(self.has) if n is None else n
        S = self.scores(np.atleast_2d(queries), n)
        k = min(k, n)
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)
