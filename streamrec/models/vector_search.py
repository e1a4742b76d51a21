"""Top-k inner-product search over item vectors that keep changing, with a faiss inverted file
(``IndexIVFScalarQuantizer``, rows in float16), for catalogues too large to score whole
(:data:`~streamrec.models.candidates.EXACT_BELOW`). The choice and its measurements are
docs/decisions/0015-ann-index.md."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from streamrec.models.candidates import Banned, SourceScores, first_per_row, smallest_per_row

#: Inverted lists probed per query. At 1M items in 4,000 lists, 16 reached recall@10 0.99 on
#: clustered vectors (decision 0015); ``benchmarks/scale.py`` measures it on each run.
NPROBE = 16


class VectorSearch:
    """An inverted file kept in step with a matrix of item rows that a source owns.

    The source calls :meth:`changed` for rows whose vector moved and :meth:`removed` for rows
    that lost theirs; new rows (beyond those indexed) are added at the next search. Changed
    rows are re-added before a search, at most ``sync_per_search`` of them (the oldest marks
    first), so a source whose vectors move at every event (matrix factorisation) pays a
    bounded cost per batch and its index lags by a few batches at most; scores of the
    candidates are always computed from the current vectors. The lists are trained on the rows
    present when the index is first built, and again when the catalogue has grown
    ``retrain_growth``-fold (``4 * sqrt(n)`` lists, at most ``train_per_list`` rows each).

    >>> rng = np.random.default_rng(0)
    >>> items = rng.normal(size=(3000, 8)).astype(np.float32)
    >>> items /= np.linalg.norm(items, axis=1, keepdims=True)  # unit rows: each its own best
    >>> search = VectorSearch(8)
    >>> found = search.search(items, np.ones(3000, bool), 3000, items[:2], k=1)
    >>> found.tolist(), search.built
    ([[0], [1]], True)
    """

    def __init__(self, dim: int, nprobe: int = NPROBE,
                 sync_per_search: int = 2048, retrain_growth: float = 4.0,
                 train_per_list: int = 50, unit: bool = True) -> None:
        self.dim = dim
        #: False for rows of any norm (the student's vectors with their bias as a column):
        #: they are stored with one more coordinate, ``sqrt(M^2 - |x|^2)``, so that every row
        #: has norm ``M`` and the best inner product is the nearest neighbour, which is what
        #: inverted lists find well (Bachrach et al., "Speeding up the Xbox recommender system
        #: using a Euclidean transformation for inner-product spaces", RecSys 2014). Queries
        #: get a 0.
        self.unit = unit
        self._max_norm = 0.0
        self.nprobe = nprobe
        self.sync_per_search = sync_per_search
        self.retrain_growth = retrain_growth
        self.train_per_list = train_per_list
        self._index = None
        self._faiss = None
        self._indexed = 0  # rows below this were looked at by a build or a sync
        self._dirty: dict[int, None] = {}  # an ordered set: oldest marks first
        self._outgrown = False  # a row's norm passed twice the one the index was built for
        self._trained_for = 0
        #: CPU seconds of the last (re)build, training included.
        self.build_s = 0.0

    @property
    def built(self) -> bool:
        return self._index is not None

    def changed(self, rows: Iterable[int]) -> None:
        """These rows' vectors moved (or appeared): re-add them before a coming search."""
        if self._index is not None:
            for j in rows:
                if j < self._indexed:
                    self._dirty[j] = None

    def changed_one(self, j: int) -> None:
        """:meth:`changed` for one row, at the cost of a dict insert (it runs per event)."""
        if self._index is not None and j < self._indexed:
            self._dirty[j] = None

    def removed(self, rows: Iterable[int]) -> None:
        """These rows lost their vector (retired items): never found again."""
        if self._index is not None:
            ids = np.fromiter(rows, np.int64)
            for j in ids.tolist():
                self._dirty.pop(j, None)
            if len(ids):
                self._index.remove_ids(self._faiss.IDSelectorArray(ids))

    def reset(self) -> None:
        """Every vector changed (a re-centred or re-weighted matrix): all rows are added again
        at the next search, keeping the trained lists."""
        if self._index is not None:
            self._index.reset()
            self._dirty.clear()
            self._indexed = 0

    def _build(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        import faiss  # only where a catalogue needs it: the worker's main process never does

        faiss.omp_set_num_threads(1)  # the worker's model process computes on one core
        self._faiss = faiss
        t0 = time.process_time()
        rows = np.flatnonzero(valid[:n])
        # 4 sqrt(n) lists, each trained on at least 39 rows (faiss warns below that).
        nlist = max(1, min(int(4 * np.sqrt(len(rows))), len(rows) // 39))
        sample = rows
        if len(rows) > self.train_per_list * nlist:
            sample = np.sort(np.random.default_rng(0).choice(
                rows, self.train_per_list * nlist, replace=False))
        if not self.unit:
            # Headroom: rows that grow past it keep their extra coordinate at 0 (their norm
            # then exceeds M a little); past twice, the index is built again.
            self._max_norm = 1.25 * float(np.linalg.norm(matrix[rows], axis=1).max())
        width = self.dim + (not self.unit)
        quantizer = faiss.IndexFlatIP(width)
        # Rows stored in float16: half the memory of IndexIVFFlat and a search a quarter
        # cheaper at a million rows, the same recall (docs/decisions/0015-ann-index.md).
        index = faiss.IndexIVFScalarQuantizer(quantizer, width, nlist,
                                              faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # a small catalogue: no warning on stderr
        index.train(self._stored(matrix[sample]))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # for remove_ids by id
        index.nprobe = self.nprobe
        self._quantizer, self._index = quantizer, index  # the index does not own its quantizer
        self._trained_for = len(rows)
        self._indexed = 0
        self._dirty.clear()
        self._add_new(matrix, valid, n)
        self.build_s = time.process_time() - t0

    def _add_new(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        if n > self._indexed:
            rows = self._indexed + np.flatnonzero(valid[self._indexed:n])
            for a in range(0, len(rows), 100_000):  # bounds the float32 copy
                part = rows[a:a + 100_000]
                self._index.add_with_ids(self._stored(matrix[part]), part)
            self._indexed = n

    def _stored(self, rows: np.ndarray) -> np.ndarray:
        """Rows as the index holds them (see ``unit``)."""
        rows = np.asarray(rows, np.float32)
        if self.unit:
            return np.ascontiguousarray(rows)
        sq = np.einsum("ij,ij->i", rows, rows)
        if len(sq) and float(sq.max()) > 4 * self._max_norm ** 2:
            self._outgrown = True
        extra = np.sqrt(np.maximum(self._max_norm ** 2 - sq, 0.0))
        return np.ascontiguousarray(np.hstack([rows, extra[:, None]]), np.float32)

    def _query(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, np.float32)
        if not self.unit:
            q = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        return np.ascontiguousarray(q)

    def _sync(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        if self._index is None or self._outgrown \
                or n >= self.retrain_growth * max(self._trained_for, 1):
            self._outgrown = False
            if valid[:n].any():
                self._build(matrix, valid, n)
            return
        self._add_new(matrix, valid, n)
        if self._dirty:
            take = []
            for j in self._dirty:
                take.append(j)
                if len(take) == self.sync_per_search:
                    break
            for j in take:
                del self._dirty[j]
            ids = np.asarray(take, np.int64)
            self._index.remove_ids(self._faiss.IDSelectorArray(ids))
            ids = ids[valid[ids]]
            if len(ids):
                self._index.add_with_ids(self._stored(matrix[ids]), ids)

    def search(self, matrix: np.ndarray, valid: np.ndarray, n: int, queries: np.ndarray,
               k: int) -> np.ndarray:
        """``len(queries) x k`` row indices among the first ``n`` rows of ``matrix`` (those
        ``valid``), highest inner product first as far as the index finds them; -1 pads."""
        self._sync(matrix, valid, n)
        if self._index is None:  # no vector yet
            return np.full((len(queries), k), -1, np.int64)
        _, found = self._index.search(self._query(queries), k)
        return found


class PoolSearch:
    """Exact search within a pool of rows (:class:`VectorSearch`'s ``search``): for a source
    whose vectors carry signal on a known minority of the catalogue.

    >>> m = np.eye(4, dtype=np.float32)
    >>> PoolSearch(np.array([1, 3])).search(m, np.ones(4, bool), 4, m[[3]], k=1).tolist()
    [[3]]
    """

    def __init__(self, pool: np.ndarray, columns: np.ndarray | None = None) -> None:
        self.pool = pool
        #: ``matrix[pool].T`` as a contiguous array, if its owner keeps one current: a
        #: product with it took a fifth of gathering the pool's rows and multiplying
        #: (``queries @ matrix[pool].T``, 100 queries, 50,000 rows of 32).
        self.columns = columns

    def search(self, matrix: np.ndarray, valid: np.ndarray, n: int, queries: np.ndarray,
               k: int) -> np.ndarray:
        pool = self.pool
        columns = self.columns if self.columns is not None else np.ascontiguousarray(
            matrix[pool].T)
        ok = pool < n
        ok[ok] = valid[pool[ok]]
        if not ok.all():
            pool, columns = pool[ok], columns[:, ok]
        found = np.full((len(queries), k), -1, np.int64)
        if not len(pool):
            return found
        S = np.asarray(queries, np.float32) @ columns
        top = smallest_per_row(-S, min(k, len(pool)))
        best = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        found[:, : top.shape[1]] = pool[np.take_along_axis(top, best, axis=1)]
        return found


class VectorScores(SourceScores):
    """An embedding source's scores for a batch, at a catalogue size searched with an index:
    ``queries[r] . matrix[j] (+ bias[j])`` computed for the pairs asked, and each user's top
    items from :class:`VectorSearch`. Rows without a vector, and users without a query
    (``has_query`` False), score ``-inf``. The matrix may be augmented with the bias as its
    last column (and the queries with a 1), which keeps inner-product search exact."""

    def __init__(self, queries: np.ndarray, matrix: np.ndarray, valid: np.ndarray, n: int,
                 search: VectorSearch | PoolSearch, has_query: np.ndarray,
                 floor: float = -np.inf) -> None:
        self.queries = np.ascontiguousarray(queries, np.float32)
        self.matrix, self.valid, self.n, self.search = matrix, valid, n, search
        self.has_query = has_query
        self.floor = floor

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        s = np.einsum("ij,ij->i", self.queries[rows], self.matrix[items]).astype(np.float64)
        s[~(self.valid[items] & self.has_query[rows])] = -np.inf
        return s

    def block(self, items: np.ndarray) -> np.ndarray:
        S = self.queries @ self.matrix[items].T
        S[:, ~self.valid[items]] = -np.inf
        S[~self.has_query] = -np.inf
        return S

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        users = np.flatnonzero(self.has_query)
        if not len(users) or not self.n:
            return users[:0], users[:0]
        fetch = min(self.n, k + min(banned.most, 1000))
        found = self.search.search(self.matrix, self.valid, self.n, self.queries[users], fetch)
        rows = np.repeat(users, found.shape[1])
        items = found.ravel()
        ok = items >= 0
        rows, items = rows[ok], items[ok]
        ok = ~banned.contains(rows, items)
        rows, items = rows[ok], items[ok]
        # faiss returns each user's items best first: the first k allowed ones per user.
        keep = first_per_row(rows, k)
        rows, items = rows[keep], items[keep]
        keep = self.pairs(rows, items) > self.floor
        return rows[keep], items[keep]
