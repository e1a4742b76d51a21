"""A micro-batch's view of the candidate sources: the items each user may not be shown, and
each source's scores for the batch's users in the three shapes the blend asks for (each user's
top items, a block of chosen items for every user, single pairs), so that a source can answer
without scoring the whole catalogue.

>>> banned = Banned(4, [np.array([1]), np.array([], np.int64)])
>>> scores = DenseScores(np.array([[0.1, 0.9, 0.0, 0.5], [0.3, 0.2, 0.8, 0.0]]), floor=0.0)
>>> rows, items = scores.top(2, banned)
>>> list(zip(rows.tolist(), items.tolist()))  # user 0 has seen item 1; item 2 scores no more than the floor
[(0, 3), (0, 0), (1, 2), (1, 0)]
>>> scores.pairs(np.array([1]), np.array([2])).tolist()
[0.8]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

#: A batch's users x catalogue matrices (scores, the banned mask) are used below this many
#: cells; above it, only what the candidates need is computed.
DENSE_CELLS = 4_000_000
#: Catalogues smaller than this are scored whole (searched exactly): below about 50,000 items
#: a product over the catalogue costs less than an index at recall@10 0.99 (decision 0015).
EXACT_BELOW = 50_000


def head_by_score(scores: np.ndarray, h: int) -> np.ndarray:
    """The ``h`` highest-scoring indices, best first, ties in index order: the head of
    ``np.argsort(-scores, kind="stable")`` without sorting the rest (ties at the cut aside).

    >>> head_by_score(np.array([0.5, 0.9, 0.5, 0.1]), 3).tolist()
    [1, 0, 2]
    """
    if h >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, h - 1)[:h]
    return part[np.lexsort((part, -scores[part]))]


def smallest_per_row(a: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` smallest values, in no particular order (ties at the
    cut broken either way): ``np.argpartition(a, k - 1, axis=1)[:, :k]``, through
    ``torch.topk``, which selects 2.5-5x faster than numpy's introselect on float32 rows of a
    few thousand columns (measured on one core, 30-100 rows of 2,600; ``benchmarks/ranking.py``).

    >>> sorted(smallest_per_row(np.array([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]]), 2)[0].tolist())
    [1, 2]
    """
    if k >= a.shape[1]:
        return np.broadcast_to(np.arange(a.shape[1]), a.shape)
    if torch.get_num_threads() > 1:
        # Between numpy calls, torch's idle OpenMP threads made each call 10x slower on 2
        # cores (measured): the worker runs torch on one thread (streamrec/cli.py).
        return np.argpartition(a, k - 1, axis=1)[:, :k]
    return torch.topk(torch.from_numpy(a), k, dim=1, largest=False, sorted=False).indices.numpy()


def first_per_row(rows: np.ndarray, k: int) -> np.ndarray:
    """Which entries are among the first ``k`` of their row, ``rows`` being sorted.

    >>> first_per_row(np.array([0, 0, 0, 2, 2]), 2).tolist()
    [True, True, False, True, True]
    """
    return np.arange(len(rows)) - np.searchsorted(rows, rows) < k


class Banned:
    """The items each user of a batch may not be shown (seen, excluded by a request), as one
    sorted array of ``user row * n + item`` keys, and as a users x catalogue mask while that
    is small (:data:`DENSE_CELLS`)."""

    def __init__(self, n: int, per_user: Sequence[np.ndarray],
                 everyone: np.ndarray | None = None) -> None:
        self.n = n
        self.users = len(per_user)
        self.counts = np.fromiter(map(len, per_user), np.int64, len(per_user))
        rows = np.repeat(np.arange(self.users, dtype=np.int64), self.counts)
        items = np.concatenate(per_user).astype(np.int64) if len(per_user) else rows
        self.keys = np.unique(rows * n + items)
        #: Items nobody may be shown (retired ones), as a mask over the catalogue.
        self.everyone: np.ndarray | None = None
        if everyone is not None and len(everyone):
            self.everyone = np.zeros(n, bool)
            self.everyone[everyone] = True
        #: The most items any one user may not be shown: what a top-k must look past.
        self.most = (int(self.counts.max()) if self.users else 0) + (
            len(everyone) if self.everyone is not None else 0)
        self.dense: np.ndarray | None = None
        if self.users * n <= DENSE_CELLS:
            self.dense = np.zeros((self.users, n), bool)
            self.dense[rows, items] = True
            if self.everyone is not None:
                self.dense[:, self.everyone] = True

    def contains(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each ``(rows[i], items[i])`` is banned."""
        if self.dense is not None:
            return self.dense[rows, items]
        hit = np.zeros(np.shape(rows), bool)
        if len(self.keys):
            k = rows * self.n + items
            pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
            hit = self.keys[pos] == k
        if self.everyone is not None:
            hit |= self.everyone[items]
        return hit

    def block(self, items: np.ndarray) -> np.ndarray:
        """users x ``len(items)``: whether each user may not be shown each of ``items``
        (distinct)."""
        if self.dense is not None:
            return self.dense[:, items]
        # From the banned keys (a few per user) rather than a lookup per cell.
        mask = np.zeros((self.users, len(items)), bool)
        if len(self.keys) and len(items):
            sorter = np.argsort(items, kind="stable")
            wanted = self.keys % self.n
            at = np.minimum(np.searchsorted(items, wanted, sorter=sorter), len(items) - 1)
            hit = items[sorter[at]] == wanted
            mask[self.keys[hit] // self.n, sorter[at[hit]]] = True
        if self.everyone is not None:
            mask[:, self.everyone[items]] = True
        return mask


class SourceScores:
    """One source's scores for the users of a batch (rows ``0..U-1``)."""

    floor: float = 0.0

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The score of each ``(rows[i], items[i])``."""
        raise NotImplementedError

    def block(self, items: np.ndarray) -> np.ndarray:
        """users x ``len(items)``: every user's score of each of ``items``."""
        raise NotImplementedError

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        """Each user's (up to) ``k`` best allowed items scoring above the floor, as flat
        ``(rows, items)``, grouped by row in no particular order within it."""
        raise NotImplementedError


def best_of_block(S: np.ndarray, k: int, banned: np.ndarray, floor: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (up to) ``k`` highest columns of ``S`` that are not ``banned`` and score above
    ``floor``, as flat ``(rows, columns)``."""
    # The smallest k of the negated scores, in float32: 4x faster than the largest k in float64
    # on rows that are mostly zeros (measured). Sources return ordinary magnitudes (decayed to
    # now), so float32 neither overflows nor ties.
    neg = np.negative(S, dtype=np.float32)
    np.putmask(neg, banned, np.inf)
    top = smallest_per_row(neg, min(k, S.shape[1]))
    r = np.repeat(np.arange(len(S)), top.shape[1])
    t = top.ravel()
    keep = ~banned[r, t] & (S[r, t] > floor)
    return r[keep], t[keep]


class DenseScores(SourceScores):
    """Scores held as a users x catalogue matrix: what every source computed before retrieval,
    and still the cheapest way for a small catalogue."""

    def __init__(self, scores: np.ndarray, floor: float) -> None:
        self.scores = scores
        self.floor = floor

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores[rows, items]

    def block(self, items: np.ndarray) -> np.ndarray:
        return self.scores[:, items]

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        mask = banned.dense if banned.dense is not None else banned.block(
            np.arange(self.scores.shape[1]))
        return best_of_block(self.scores, k, mask, self.floor)


class ScoresOf:
    """Scores over a catalogue of ``n`` items computed for the items asked only (``v[items]``
    calls ``score_of(items)``): for a user-independent source whose every score would cost
    more per batch than the lists need (freshness at a million items: 19 ms).

    >>> v = ScoresOf(lambda items: items * 2.0, n=5)
    >>> len(v), v[np.array([1, 4])].tolist()
    (5, [2.0, 8.0])
    """

    def __init__(self, score_of: Callable[[np.ndarray], np.ndarray], n: int) -> None:
        self.score_of, self.n = score_of, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, items: np.ndarray) -> np.ndarray:
        return self.score_of(np.asarray(items))


class SharedScores(SourceScores):
    """The same scores for every user (popularity, freshness), and the catalogue's order by
    them when the source keeps it: each user's top items are a walk down its head."""

    def __init__(self, scores: np.ndarray | ScoresOf, order: np.ndarray | None, floor: float,
                 users: int) -> None:
        self.scores, self.order, self.floor, self.users = scores, order, floor, users

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores[items]

    def block(self, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores[items], (self.users, len(items)))

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        v = self.scores
        h = min(len(v), k + banned.most)
        # A source may keep the order of its head only (popularity at scale).
        head = self.order[:h] if self.order is not None and len(self.order) >= h \
            else head_by_score(v, h)
        ok = ~banned.block(head) & (v[head] > self.floor)
        ok &= np.cumsum(ok, axis=1) <= k
        r, c = np.nonzero(ok)
        return r, head[c]


class SparseScores(SourceScores):
    """Scores of a few items per user (co-visitation's neighbours of their recent items): the
    rest score 0.

    >>> s = SparseScores(np.array([0, 0, 1]), np.array([5, 2, 5]), np.array([1.0, 3.0, 2.0]),
    ...                  n=10, users=2)
    >>> s.pairs(np.array([0, 1, 1]), np.array([2, 5, 2])).tolist()
    [3.0, 2.0, 0.0]
    """

    def __init__(self, rows: np.ndarray, items: np.ndarray, weights: np.ndarray, n: int,
                 users: int, floor: float = 0.0) -> None:
        self.n, self.users, self.floor = n, users, floor
        keys = rows.astype(np.int64) * n + items
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.weights = np.bincount(inverse, weights, minlength=len(self.keys))

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(np.shape(rows))
        k = rows.astype(np.int64) * self.n + items
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return np.where(self.keys[pos] == k, self.weights[pos], 0.0)

    def block(self, items: np.ndarray) -> np.ndarray:
        rows = np.repeat(np.arange(self.users, dtype=np.int64), len(items))
        return self.pairs(rows, np.tile(items, self.users)).reshape(self.users, len(items))

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        rows, items = self.keys // self.n, self.keys % self.n
        ok = (self.weights > self.floor) & ~banned.contains(rows, items)
        rows, items, w = rows[ok], items[ok], self.weights[ok]
        order = np.lexsort((-w, rows))
        rows, items = rows[order], items[order]
        keep = first_per_row(rows, k)
        return rows[keep], items[keep]
