"""Top-k inner-product search over item vectors that keep changing, with a faiss inverted file
(``IndexIVFScalarQuantizer``, rows in float16), for catalogues too large to score whole
(:data:`~streamrec.models.candidates.EXACT_BELOW`). The choice and its measurements are
docs/decisions/0015-ann-index.md."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from dataclasses import dataclass

import numpy as np

from streamrec.models.candidates import Banned, SourceScores, first_per_row, smallest_per_row

#: Inverted lists probed per query. At 1M items in 4,000 lists, 16 reached recall@10 0.99 on
#: clustered vectors (decision 0015); ``benchmarks/scale.py`` measures it on each run.
NPROBE = 16


@dataclass
class _Built:
    """One trained inverted file and what its stored rows depend on."""

    index: object
    quantizer: object  # the index does not own its quantizer: kept alive here
    max_norm: float  # the norm ``M`` its rows were completed to (``unit=False``)
    trained_for: int  # valid rows when it was trained
    n: int  # rows ``[0, n)`` it was given
    cpu_s: float
    outgrown: bool = False


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

    A rebuild of ``background_from`` rows or more runs in a thread while searches go on in the
    index it replaces, or the first time by scoring every row (faiss releases the GIL): at a
    million items it is about half a minute of CPU that the batch which crossed the growth
    would otherwise wait for. Rows changed, added or removed meanwhile reach the new index
    when it takes over, at a later search.

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
                 train_per_list: int = 50, unit: bool = True,
                 background_from: int = 100_000) -> None:
        self.dim = dim
        #: False for rows of any norm (the student's vectors with their bias as a column):
        #: they are stored with one more coordinate, ``sqrt(M^2 - |x|^2)``, so that every row
        #: has norm ``M`` and the best inner product is the nearest neighbour, which is what
        #: inverted lists find well (Bachrach et al., "Speeding up the Xbox recommender system
        #: using a Euclidean transformation for inner-product spaces", RecSys 2014). Queries
        #: get a 0.
        self.unit = unit
        self.nprobe = nprobe
        self.sync_per_search = sync_per_search
        self.retrain_growth = retrain_growth
        self.train_per_list = train_per_list
        self.background_from = background_from
        self._faiss = None
        self._built: _Built | None = None
        self._indexed = 0  # rows below this were looked at by a build or a sync
        self._dirty: dict[int, None] = {}  # an ordered set: oldest marks first
        #: A rebuild running in a thread, and what happened to its rows since it began.
        self._next: Future[_Built] | None = None
        self._changed_since: dict[int, None] = {}
        self._removed_since: list[int] = []
        self._reset_since = False
        #: CPU seconds of the last (re)build, training included.
        self.build_s = 0.0

    @property
    def built(self) -> bool:
        return self._built is not None

    @property
    def rebuilding(self) -> bool:
        return self._next is not None

    def changed(self, rows: Iterable[int]) -> None:
        """These rows' vectors moved (or appeared): re-add them before a coming search."""
        if self._built is not None or self._next is not None:
            for j in rows:
                self.changed_one(j)

    def changed_one(self, j: int) -> None:
        """:meth:`changed` for one row, at the cost of a dict insert (it runs per event)."""
        if j < self._indexed:
            self._dirty[j] = None
        if self._next is not None:
            self._changed_since[j] = None

    def removed(self, rows: Iterable[int]) -> None:
        """These rows lost their vector (retired items): never found again."""
        ids = np.fromiter(rows, np.int64)
        if not len(ids):
            return
        if self._built is not None:
            for j in ids.tolist():
                self._dirty.pop(j, None)
            self._built.index.remove_ids(self._faiss.IDSelectorArray(ids))
        if self._next is not None:
            self._removed_since.extend(ids.tolist())

    def reset(self) -> None:
        """Every vector changed (a re-centred or re-weighted matrix): all rows are added again
        at the next search, keeping the trained lists."""
        if self._built is not None:
            self._built.index.reset()
            self._dirty.clear()
            self._indexed = 0
        if self._next is not None:
            self._reset_since = True

    def wait(self) -> None:
        """Until a rebuild running in the background is done (it takes over at the next
        search)."""
        if self._next is not None:
            wait_for([self._next])

    def _train(self, matrix: np.ndarray, rows: np.ndarray) -> _Built:
        """Lists trained on (a sample of) ``rows``, none of them added yet."""
        faiss = self._faiss
        t0 = time.thread_time()
        # 4 sqrt(n) lists, each trained on at least 39 rows (faiss warns below that).
        nlist = max(1, min(int(4 * np.sqrt(len(rows))), len(rows) // 39))
        sample = rows
        if len(rows) > self.train_per_list * nlist:
            sample = np.sort(np.random.default_rng(0).choice(
                rows, self.train_per_list * nlist, replace=False))
        max_norm = 0.0
        if not self.unit:
            # Headroom: rows that grow past it keep their extra coordinate at 0 (their norm
            # then exceeds M a little); past twice, the index is built again.
            max_norm = 1.25 * float(np.linalg.norm(matrix[rows], axis=1).max())
        width = self.dim + (not self.unit)
        quantizer = faiss.IndexFlatIP(width)
        # Rows stored in float16: half the memory of IndexIVFFlat and a search a quarter
        # cheaper at a million rows, the same recall (docs/decisions/0015-ann-index.md).
        index = faiss.IndexIVFScalarQuantizer(quantizer, width, nlist,
                                              faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # a small catalogue: no warning on stderr
        built = _Built(index, quantizer, max_norm, len(rows), 0, 0.0)
        index.train(self._stored(built, matrix[sample]))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # for remove_ids by id
        index.nprobe = self.nprobe
        built.cpu_s = time.thread_time() - t0
        return built

    def _add(self, built: _Built, matrix: np.ndarray, rows: np.ndarray) -> None:
        t0 = time.thread_time()
        for a in range(0, len(rows), 100_000):  # bounds the float32 copy
            part = rows[a:a + 100_000]
            built.index.add_with_ids(self._stored(built, matrix[part]), part)
        built.cpu_s += time.thread_time() - t0

    def _build(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        """Train and fill new lists in this thread; they serve from this search on."""
        built = self._train(matrix, np.flatnonzero(valid[:n]))
        self._built, self._indexed = built, 0
        self._dirty.clear()
        self._add_new(matrix, valid, n)
        self.build_s = built.cpu_s

    def _build_in_background(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        """Train and fill new lists on rows ``[0, n)`` as they are now, in a thread."""
        rows = np.flatnonzero(valid[:n])  # a copy: the source may change ``valid`` meanwhile
        self._changed_since.clear()
        self._removed_since.clear()
        self._reset_since = False
        future: Future[_Built] = Future()

        def build() -> None:
            try:
                self._faiss.omp_set_num_threads(1)  # a thread's own setting: one core here too
                built = self._train(matrix, rows)
                # Rows the source changes while this reads them are marked and added again.
                self._add(built, matrix, rows)
                built.n = n
                future.set_result(built)
            except BaseException as e:  # noqa: BLE001 (raised again in the searching thread)
                future.set_exception(e)

        # A daemon thread, not an executor's: a worker that stops does not wait for a build.
        threading.Thread(target=build, name="vector-search-build", daemon=True).start()
        self._next = future

    def _take_over(self) -> None:
        """The rebuilt lists replace the current ones, with what changed since they began."""
        future, self._next = self._next, None
        built = future.result()  # raises what the build raised
        if self._removed_since:
            built.index.remove_ids(self._faiss.IDSelectorArray(
                np.asarray(self._removed_since, np.int64)))
        self._built, self.build_s = built, built.cpu_s
        if self._reset_since:
            built.index.reset()
            self._indexed, self._dirty = 0, {}
        else:
            self._indexed = built.n
            self._dirty = {j: None for j in self._changed_since if j < built.n}
        self._changed_since, self._removed_since = {}, []

    def _add_new(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        if n > self._indexed:
            rows = self._indexed + np.flatnonzero(valid[self._indexed:n])
            self._add(self._built, matrix, rows)
            self._indexed = n

    def _stored(self, built: _Built, rows: np.ndarray) -> np.ndarray:
        """Rows as ``built`` holds them (see ``unit``)."""
        rows = np.asarray(rows, np.float32)
        if self.unit:
            return np.ascontiguousarray(rows)
        sq = np.einsum("ij,ij->i", rows, rows)
        if len(sq) and float(sq.max()) > 4 * built.max_norm ** 2:
            built.outgrown = True
        extra = np.sqrt(np.maximum(built.max_norm ** 2 - sq, 0.0))
        return np.ascontiguousarray(np.hstack([rows, extra[:, None]]), np.float32)

    def _query(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, np.float32)
        if not self.unit:
            q = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        return np.ascontiguousarray(q)

    def _sync(self, matrix: np.ndarray, valid: np.ndarray, n: int) -> None:
        if self._faiss is None:
            import faiss  # only where a catalogue needs it: the worker's main process never does

            faiss.omp_set_num_threads(1)  # the worker's model process computes on one core
            self._faiss = faiss
        if self._next is not None and self._next.done():
            self._take_over()
        built = self._built
        if self._next is None and (built is None or built.outgrown
                                   or n >= self.retrain_growth * max(built.trained_for, 1)):
            if not valid[:n].any():
                return
            if n < self.background_from:
                self._build(matrix, valid, n)
                return
            if built is not None:
                built.outgrown = False
            self._build_in_background(matrix, valid, n)
        if self._built is None:  # the first lists are being built: searches are exact
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
            self._built.index.remove_ids(self._faiss.IDSelectorArray(ids))
            ids = ids[valid[ids]]
            if len(ids):
                self._built.index.add_with_ids(self._stored(self._built, matrix[ids]), ids)

    def search(self, matrix: np.ndarray, valid: np.ndarray, n: int, queries: np.ndarray,
               k: int) -> np.ndarray:
        """``len(queries) x k`` row indices among the first ``n`` rows of ``matrix`` (those
        ``valid``), highest inner product first as far as the index finds them; -1 pads."""
        self._sync(matrix, valid, n)
        if self._built is None:
            if self._next is None:  # no vector yet
                return np.full((len(queries), k), -1, np.int64)
            return self._exact(matrix, valid, n, queries, k)
        _, found = self._built.index.search(self._query(queries), k)
        return found

    @staticmethod
    def _exact(matrix: np.ndarray, valid: np.ndarray, n: int, queries: np.ndarray,
               k: int) -> np.ndarray:
        """:meth:`search` by scoring every row, a block at a time (while the first lists are
        built in the background: a second or two per batch of 100 at a million rows)."""
        q = np.asarray(queries, np.float32)
        best = np.full((len(q), k), -np.inf, np.float32)
        found = np.full((len(q), k), -1, np.int64)
        for a in range(0, n, 100_000):
            rows = a + np.flatnonzero(valid[a:min(n, a + 100_000)])
            if not len(rows):
                continue
            s = np.hstack([best, q @ np.asarray(matrix[rows], np.float32).T])
            ids = np.hstack([found, np.broadcast_to(rows, (len(q), len(rows)))])
            top = smallest_per_row(-s, k)
            best, found = np.take_along_axis(s, top, 1), np.take_along_axis(ids, top, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        best, found = np.take_along_axis(best, order, 1), np.take_along_axis(found, order, 1)
        return np.where(np.isfinite(best), found, -1)


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
