"""Which tags (or categories, genres) each item of the catalogue carries, as a sparse
items x tags matrix that scores every item against many users' tag weights in one product."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from streamrec.models.catalog import Catalog, grow_rows

#: Tags per item that pair scores read (:meth:`ItemTags.pair_scores`); an item's further tags
#: count only in the whole-catalogue product.
PAIR_TAGS = 16
#: Items remembered per tag, newest last, for proposing from a user's favourite tags.
LATEST_PER_TAG = 300


def normalise_tag(tag: str) -> str:
    """Tags compare case- and space-insensitively: ``" Sci-Fi"`` is ``"sci-fi"``."""
    return " ".join(tag.lower().split())


class ItemTags:
    """Item -> tag ids, kept beside a :class:`Catalog`.

    Each item's row is ``1 / sqrt(number of its tags)``, so an item with many tags does not
    outscore one with a single matching tag just by carrying more.

    >>> c = Catalog()
    >>> tags = ItemTags(c)
    >>> tags.set_tags(c.add("a", 0.0), ["Jazz", "live"]); tags.set_tags(c.add("b", 0.0), ["jazz"])
    >>> weights = np.zeros((1, tags.n_tags)); weights[0, tags.tag_ids["jazz"]] = 1.0
    >>> [[round(float(s), 3) for s in row] for row in tags.scores(weights, len(c))]
    [[0.707, 1.0]]
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.tag_ids: dict[str, int] = {}
        self.tag_names: list[str] = []
        self.of_item: dict[int, tuple[int, ...]] = {}
        self._matrix: sp.csr_matrix | None = None
        #: Each item's first :data:`PAIR_TAGS` tag ids (-1 pads) and its row's scale.
        self._table = np.full((0, PAIR_TAGS), -1, np.int32)
        self._scale = np.zeros(0, np.float32)
        #: tag id -> its latest items, newest last.
        self.latest: dict[int, deque[int]] = {}
        self._latest_arrays: dict[int, np.ndarray] = {}

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def tag_id(self, tag: str) -> int:
        tag = normalise_tag(tag)
        t = self.tag_ids.get(tag)
        if t is None:
            t = self.tag_ids[tag] = len(self.tag_names)
            self.tag_names.append(tag)
        return t

    def set_tags(self, j: int, tags: Iterable[str]) -> None:
        """Item ``j``'s tags (replacing any it had); blank tags are ignored."""
        ids = tuple(dict.fromkeys(self.tag_id(t) for t in tags if t and t.strip()))
        if ids or j in self.of_item:
            self.of_item[j] = ids
            self._matrix = None
            if j >= len(self._table):
                self._table = grow_rows(self._table, j + 1)
                self._table[len(self._scale):] = -1
                self._scale = grow_rows(self._scale, len(self._table))
            self._table[j] = -1
            self._table[j, : min(len(ids), PAIR_TAGS)] = ids[:PAIR_TAGS]
            self._scale[j] = 1.0 / np.sqrt(len(ids)) if ids else 0.0
            for t in ids:
                self.latest.setdefault(t, deque(maxlen=LATEST_PER_TAG)).append(j)
                self._latest_arrays.pop(t, None)

    def latest_items(self, tag: int) -> np.ndarray:
        """The latest items carrying ``tag`` (see :data:`LATEST_PER_TAG`), as an array kept
        until the tag gains an item."""
        a = self._latest_arrays.get(tag)
        if a is None:
            a = self._latest_arrays[tag] = np.fromiter(self.latest.get(tag, ()), np.int64)
        return a

    def block_scores(self, weights: np.ndarray, items: np.ndarray) -> np.ndarray:
        """What :meth:`scores` gives for ``items``, for those columns only (users x items),
        through a sparse items x tags matrix of their first :data:`PAIR_TAGS` tags."""
        if not len(items) or not self.n_tags:
            return np.zeros((len(weights), len(items)), np.float32)
        known = items < len(self._table)
        T = np.where(known[:, None], self._table[np.where(known, items, 0)], -1)
        r, c = np.nonzero(T >= 0)
        m = sp.csr_matrix((self._scale[items[r]], (r, T[r, c])), shape=(len(items), self.n_tags))
        w = np.zeros((len(weights), self.n_tags), np.float32)
        w[:, : min(weights.shape[1], self.n_tags)] = weights[:, : self.n_tags]
        return np.asarray((m @ w.T).T, np.float32)

    def pair_scores(self, weights: np.ndarray, rows: np.ndarray, items: np.ndarray
                    ) -> np.ndarray:
        """What :meth:`scores` gives at ``(rows[i], items[i])``, for those pairs only."""
        if not len(items) or not self.n_tags:
            return np.zeros(len(items), np.float32)
        known = items < len(self._table)
        T = self._table[np.where(known, items, 0)]
        w = np.zeros((len(weights), self.n_tags + 1), np.float32)  # column -1: padding
        w[:, : min(weights.shape[1], self.n_tags)] = weights[:, : self.n_tags]
        s = w[rows[:, None], T].sum(axis=1) * self._scale[np.where(known, items, 0)]
        return np.where(known, s, 0.0).astype(np.float32)

    def matrix(self, n: int) -> sp.csr_matrix:
        """The first ``n`` items x tags, each row scaled to unit length (rebuilt after changes,
        so a batch of uploads costs one rebuild)."""
        m = self._matrix
        if m is None or m.shape != (n, self.n_tags):
            rows, cols, vals = [], [], []
            for j, ids in self.of_item.items():
                if j < n and ids:
                    rows += [j] * len(ids)
                    cols += ids
                    vals += [1.0 / np.sqrt(len(ids))] * len(ids)
            m = self._matrix = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)),
                                             shape=(n, self.n_tags))
        return m

    def scores(self, weights: np.ndarray, n: int) -> np.ndarray:
        """``users x n``: each user's tag ``weights`` (``users x n_tags``) against every item."""
        if not self.n_tags:
            return np.zeros((len(weights), n), np.float32)
        w = np.zeros((len(weights), self.n_tags), np.float32)
        w[:, : weights.shape[1]] = weights[:, : self.n_tags]
        return np.asarray((self.matrix(n) @ w.T).T, np.float32)
