"""The item catalogue: stable integer indices for item ids, so models can keep numpy arrays."""

from __future__ import annotations

import math

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

    A retired item keeps its index (every model's arrays are laid out by it) and is banned
    for everyone; only an upload made after the retirement brings it back:

    >>> c.retire("a", ts=50.0)
    0
    >>> c.retired.tolist(), c.retired_rows.tolist()
    ([True, False], [0])
    >>> c.admits_upload("a", ts=10.0), c.admits_upload("a", ts=60.0)
    (False, True)
    >>> c.restore("a"); c.retired.tolist()
    [False, False]
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._first_seen = np.zeros(1024, dtype=np.float64)
        self._uploaded = np.zeros(1024, dtype=bool)
        self._n_uploaded = 0
        self._retired = np.zeros(1024, dtype=bool)
        #: Retired item -> the time of its retirement (ids never held here included: a
        #: retirement may come before anything else of its item reaches this worker).
        self.retired_at: dict[str, float] = {}
        #: Indices of the retired items held here (a set: hot loops test it cheaply).
        self.retired_indices: set[int] = set()
        self._retired_rows: np.ndarray | None = np.empty(0, np.int64)

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
            self._retired = np.concatenate([self._retired, np.zeros_like(self._retired)])
        self._first_seen[j] = ts
        if self.retired_at and item_id in self.retired_at:
            self._retired[j] = True
            self.retired_indices.add(j)
            self._retired_rows = None
        return j

    def retire(self, item_id: str, ts: float = 0.0) -> int | None:
        """Ban ``item_id`` for everyone from now on, as retired at ``ts``; its index (None if
        the catalogue does not hold it) stays taken."""
        self.retired_at[item_id] = max(ts, self.retired_at.get(item_id, -math.inf))
        j = self.index.get(item_id)
        if j is not None and not self._retired[j]:
            self._retired[j] = True
            self.retired_indices.add(j)
            self._retired_rows = None
        return j

    def restore(self, item_id: str) -> None:
        """Lift ``item_id``'s retirement (it was uploaded again after it)."""
        if self.retired_at.pop(item_id, None) is not None:
            j = self.index.get(item_id)
            if j is not None:
                self._retired[j] = False
                self.retired_indices.discard(j)
                self._retired_rows = None

    def is_retired(self, item_id: str) -> bool:
        return item_id in self.retired_at

    def admits_upload(self, item_id: str, ts: float) -> bool:
        """Whether an upload at ``ts`` may (re-)enter ``item_id``: it is not retired, or was
        retired before ``ts`` (a replay of the upload it retired is older and stays out)."""
        return ts > self.retired_at.get(item_id, -math.inf)

    @property
    def retired(self) -> np.ndarray:
        """A mask over the catalogue: items retired."""
        return self._retired[: len(self.ids)]

    @property
    def retired_rows(self) -> np.ndarray:
        """Indices of the retired items, ascending (usually few: cheaper than the mask)."""
        if self._retired_rows is None:
            self._retired_rows = np.flatnonzero(self.retired)
        return self._retired_rows

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
