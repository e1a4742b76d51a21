"""Incremental matrix factorisation for positive-only feedback (ISGD)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.models.base import CandidateSource, RecordsChanges
from streamrec.models.candidates import SourceScores, head_by_score
from streamrec.models.catalog import Catalog, grow_rows
from streamrec.models.vector_search import PoolSearch, VectorScores


class ISGD(RecordsChanges, CandidateSource):
    """Incremental SGD matrix factorisation for positive-only streams.

    Every observed (user, item) pair is a positive with target 1: one SGD step on the squared
    error ``1 - p_u . q_i`` moves the user's and the item's latent vectors toward each other
    (Vinagre, Jorge and Gama, "Fast incremental matrix factorization for recommendation with
    positive-only feedback", UMAP 2014). Scoring a user against the whole catalogue is one
    matrix-vector product.

    Parameters
    ----------
    n_factors
        Size of the latent vectors.
    learning_rate, regularization
        SGD step size and L2 penalty.
    view_weight
        A view's step is this fraction of a click's.

    Examples
    --------
    >>> mf = ISGD(n_factors=8, seed=1)
    >>> for _ in range(30):
    ...     for user, item in [("ann", "tea"), ("ann", "cake"), ("bob", "tea"), ("bob", "cake"),
    ...                        ("cid", "beer"), ("cid", "chips"), ("dan", "beer")]:
    ...         mf.learn_one(user, item, ts=0)
    >>> mf.recommend("dan", k=1, exclude=["beer"])[0][0]
    'chips'
    """

    name = "isgd"
    retrieves_at_scale = True
    floor = -np.inf  # dot products may be negative and still rank

    def __init__(self, catalog: Catalog | None = None, n_factors: int = 32,
                 learning_rate: float = 0.05, regularization: float = 0.01,
                 view_weight: float = 0.5, pool: int = 50_000, seed: int = 0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.view_weight = view_weight
        self._rng = np.random.default_rng(seed)
        #: float32, as users' vectors: ranking needs no more, the scores' products are half
        #: the size, and a million items' factors take 128 MiB (float64 and a float32 copy for
        #: scoring took three times that; HR@10 the same).
        self.item_factors = np.zeros((0, n_factors), dtype=np.float32)
        self.user_factors: dict[str, np.ndarray] = {}
        self._initialised = 0
        #: Items whose vectors changed since the journal was last drained (``None``: not kept).
        self.journal: set[str] | None = None
        #: For catalogues too large to score whole: items proposed only from the ``pool``
        #: items learned from most (their interactions counted here), searched exactly. An
        #: item's factors are a random draw until it is learned from, and the factors of
        #: lightly learned items are near-isotropic noise, on which an inverted file needed
        #: 20% of its lists probed for recall@10 0.93 (measured at 100,000 items).
        self.pool = pool
        self._learned = np.zeros(0, np.int64)
        self._pool_rows: np.ndarray | None = None
        #: ``item_factors[_pool_rows].T``, kept current (see PoolSearch).
        self._pool_columns = np.zeros((n_factors, 0), np.float32)
        self._pool_at = np.zeros(0, np.int32)  # row -> its place in the pool, or -1
        self._since_pool = 0
        self._all_valid = np.ones(0, bool)

    @staticmethod
    def _new_journal() -> set[str]:  # the items whose vectors moved
        return set()

    def reserve(self, n: int) -> None:
        """Vectors for the first ``n`` catalogue items (new ones drawn from the prior)."""
        if n > self._initialised:
            self._init_items(n)

    def _init_items(self, n: int) -> None:
        self.item_factors = grow_rows(self.item_factors, n)
        if n > self._initialised:
            self.item_factors[self._initialised:n] = self._rng.normal(
                0.0, 0.1, (n - self._initialised, self.n_factors))
            self._initialised = n

    def user_vector(self, user: str) -> np.ndarray:
        p = self.user_factors.get(user)
        if p is None:
            p = self.user_factors[user] = self._rng.normal(
                0.0, 0.1, self.n_factors).astype(np.float32)
        return p

    def mark_changed(self, items: set[str]) -> None:
        """Hand these items over again with the next :meth:`take_changes` (a write that
        failed, a vector set from outside)."""
        if self.journal is not None:
            self.journal |= items

    def forget_user(self, user: str) -> None:
        self.user_factors.pop(user, None)

    def forget_item(self, item: str) -> None:
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is not None and j < self._initialised:
            self.item_factors[j] = 0.0
            self._pool_row_moved(j)
        if self.journal is not None:
            self.journal.discard(item)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        if j >= self._initialised:  # checked here: a call per event cost 1 us
            self._init_items(j + 1)
        p = self.user_vector(user)
        q = self.item_factors[j]
        lr = self.learning_rate * (1.0 if clicked else self.view_weight)
        step = lr * (1.0 - float(p @ q))
        keep = 1.0 - lr * self.regularization
        # p + lr * (err * q - reg * p), written as two numpy calls per vector (they dominate).
        p_new = p * keep + step * q
        q *= keep  # in place: q is a view of the row
        q += step * p
        if j < len(self._pool_at) and self._pool_at[j] >= 0:  # _pool_row_moved, inline: per event
            self._pool_columns[:, self._pool_at[j]] = q
        self._learned = grow_rows(self._learned, j + 1)
        self._learned[j] += 1
        self._since_pool += 1
        self.user_factors[user] = p_new
        if self.journal is not None:
            self.journal.add(item)

    def set_item_vector(self, item: str, vector: np.ndarray, ts: float = 0.0) -> None:
        j = self.catalog.add(item, ts)
        self._init_items(j + 1)
        self.item_factors[j] = vector
        self._pool_row_moved(j)
        self._learned = grow_rows(self._learned, j + 1)
        self._learned[j] += 1  # learned elsewhere (another worker, a restart): in the pool

    def score_many(self, users, now: float = 0.0) -> np.ndarray:
        n = len(self.catalog)
        self._init_items(n)
        P = np.zeros((len(users), self.n_factors), np.float32)
        unknown = []
        for r, u in enumerate(users):
            p = self.user_factors.get(u)
            if p is None:
                unknown.append(r)
            else:
                P[r] = p
        S = P @ self.item_factors[:n].T
        S[unknown] = -np.inf
        return self.no_opinion_on_retired(S)

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        n = len(self.catalog)
        if self.dense_at(n):
            return super().scores_for(users, now)
        self._init_items(n)
        P = np.zeros((len(users), self.n_factors), np.float32)
        known = np.zeros(len(users), bool)
        for r, u in enumerate(users):
            p = self.user_factors.get(u)
            if p is not None:
                P[r], known[r] = p, True
        if len(self._all_valid) < len(self.item_factors):
            self._all_valid = np.ones(len(self.item_factors), bool)
        pool = self._pool()
        return VectorScores(P, self.item_factors, self._all_valid, n,
                            PoolSearch(pool, self._pool_columns),
                            known, self.floor)

    def _pool(self) -> np.ndarray:
        """The ``pool`` items learned from most, taken again every ``pool // 10`` events."""
        if self._pool_rows is None or self._since_pool > self.pool // 10:
            learned = self._learned
            self._pool_rows = np.sort(head_by_score(learned, min(self.pool, len(learned))))
            self._pool_rows = self._pool_rows[learned[self._pool_rows] > 0]
            self._since_pool = 0
            self._pool_columns = np.ascontiguousarray(self.item_factors[self._pool_rows].T)
            self._pool_at = np.full(len(self.item_factors), -1, np.int32)
            self._pool_at[self._pool_rows] = np.arange(len(self._pool_rows), dtype=np.int32)
        return self._pool_rows

    def _pool_row_moved(self, j: int) -> None:
        if j < len(self._pool_at) and self._pool_at[j] >= 0:
            self._pool_columns[:, self._pool_at[j]] = self.item_factors[j]

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        n = len(self.catalog)
        self._init_items(n)
        p = self.user_factors.get(user)
        if p is None:
            return np.full(n, -np.inf)
        return self.no_opinion_on_retired(self.item_factors[:n] @ p)
