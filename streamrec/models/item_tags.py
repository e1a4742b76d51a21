"""Which tags (or categories, genres) each item of the catalogue carries, as a sparse
items x tags matrix that scores every item against many users' tag weights in one product."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from streamrec.models.catalog import Catalog


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
