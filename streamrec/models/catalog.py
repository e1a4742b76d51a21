"""The item catalogue: stable integer indices for item ids, so models can keep numpy arrays."""

from __future__ import annotations

import numpy as np


class Catalog:
    """Maps item ids to dense indices ``0..n-1`` and remembers when each item appeared.

    Every online model of one recommender shares a catalogue, so index ``j`` means the same
    item in every score vector.

    >>> c = Catalog()
    >>> c.add("a", ts=10.0), c.add("b", ts=12.0), c.add("a", ts=99.0)
    (0, 1, 0)
    >>> len(c), c.ids[1], c.first_seen[:2].tolist()
    (2, 'b', [10.0, 12.0])
    >>> c.mark_uploaded(c.add("b", ts=12.0)); c.never_uploaded
    1
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._first_seen = np.zeros(1024, dtype=np.float64)
        self._uploaded = np.zeros(1024, dtype=bool)
        self._n_uploaded = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.index

    def add(self, item_id: str, ts: float) -> int:
        """The index of ``item_id``, registering it (first seen at ``ts``) if new."""
        j = self.index.get(item_id)
        if j is not None:
            return j
        j = len(self.ids)
        self.ids.append(item_id)
        self.index[item_id] = j
        if j >= len(self._first_seen):
            self._first_seen = np.concatenate([self._first_seen, np.zeros_like(self._first_seen)])
            self._uploaded = np.concatenate([self._uploaded, np.zeros_like(self._uploaded)])
        self._first_seen[j] = ts
        return j

    def mark_uploaded(self, j: int) -> None:
        """Item ``j`` came as an upload (items first met in a view or click did not)."""
        if not self._uploaded[j]:
            self._uploaded[j] = True
            self._n_uploaded += 1

    @property
    def never_uploaded(self) -> int:
        """How many items entered through views and clicks alone (a worker caps them)."""
        return len(self.ids) - self._n_uploaded

    @property
    def first_seen(self) -> np.ndarray:
        """Time each item was first seen (its upload, or its first interaction)."""
        return self._first_seen[: len(self.ids)]


def grow_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with at least ``n`` rows, doubling capacity so appends stay amortised O(1)."""
    if n <= len(a):
        return a
    cap = max(n, 2 * len(a), 64)
    out = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
    out[: len(a)] = a
    return out
