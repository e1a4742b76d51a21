"""Item-to-item co-visitation: items consumed close together by the same user."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from streamrec.models.base import CandidateSource, RecordsChanges
from streamrec.models.candidates import SourceScores, SparseScores
from streamrec.models.catalog import Catalog, grow_rows
from streamrec.models.neighbours import NeighbourList
from streamrec.models.popularity import epoch_of


class CoVisitation(RecordsChanges, CandidateSource):
    """Decayed co-occurrence counts between items in each user's recent history.

    When a user consumes item ``i``, every item ``j`` among their last ``pair_window`` items
    gains weight ``1 / distance`` toward ``i`` (and back), decaying with ``half_life_s``. Each item
    keeps at most ``max_neighbours`` neighbours (the strongest), so memory stays bounded. A user
    is scored from their last ``window`` items, recent ones counting more; neighbour weights
    can be divided by ``neighbour_count ** popularity_damping`` so that popular items do not
    dominate every list. The defaults (20 items, pairs across all of them, no damping) were
    measured against a plain co-click count: on MovieLens-100K the earlier 10 items, pairs
    within 5 and damping 0.3 gave HR@10 0.143 against the count's 0.173; these give 0.183
    (docs/decisions/0014-covisitation-window-20.md).

    Examples
    --------
    >>> cv = CoVisitation()
    >>> for user, items in {"ann": ["tea", "cake"], "bob": ["tea", "cake"], "cid": ["tea", "jam"]}.items():
    ...     for t, item in enumerate(items):
    ...         cv.learn_one(user, item, ts=t)
    >>> cv.learn_one("dan", "tea", ts=5)
    >>> [r.item_id for r in cv.recommend("dan", k=2, exclude=["tea"], now=5)]
    ['cake', 'jam']
    """

    name = "covisitation"
    retrieves_at_scale = True

    def __init__(self, catalog: Catalog | None = None, window: int = 20,
                 max_neighbours: int = 100, half_life_s: float = 7 * 86400.0,
                 popularity_damping: float = 0.0, view_weight: float = 0.5,
                 pair_window: int = 20) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.window = window
        # Each pair is two shared-state increments (write-back is the pipeline's costliest
        # part): a smaller pair window than the scoring window trades quality for throughput.
        self.pair_window = min(pair_window, window)
        self.max_neighbours = max_neighbours
        self.half_life_s = half_life_s
        self.popularity_damping = popularity_damping
        self.view_weight = view_weight
        self.neighbours: dict[int, NeighbourList] = {}
        self.recent: dict[str, deque[int]] = {}
        self._count = np.zeros(1024, dtype=np.float64)
        self.epoch: float | None = None
        #: Pair increments not yet written to shared storage (``None``: not collected).
        self.journal: dict[tuple[str, str], float] | None = None
        #: False: record pairs in the journal only, keeping no neighbour lists (the
        #: benchmark's pass-through, which writes what the pipeline writes without models).
        self.keep_lists = True

    def rescale(self, ts: float) -> float:
        """Move the epoch forward to ``ts``'s (rescaling every weight held); the factor that
        turns a raw weight at ``ts`` into one relative to the epoch."""
        epoch = epoch_of(ts, self.half_life_s)
        if self.epoch is None:
            self.epoch = epoch
        elif epoch > self.epoch:
            f = 2.0 ** (-(epoch - self.epoch) / self.half_life_s)
            for nb in self.neighbours.values():
                nb.scale(f)
            self._count *= f
            self.epoch = epoch
        return 2.0 ** ((ts - self.epoch) / self.half_life_s)

    def forget_user(self, user: str) -> None:
        self.recent.pop(user, None)

    def forget_item(self, item: str) -> None:
        """Drop ``item``'s neighbours, its place in every other item's list, and its count. A
        scan of every list (retirements are rare, and a list pruned on one side may still
        hold it on the other). Users' recent items keep it until it ages out: no pair is
        made with a retired item, and it has no neighbours to score with."""
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is None:
            return
        self.neighbours.pop(j, None)
        for nb in self.neighbours.values():
            if j in nb.pos:
                nb.remove(j)
        if j < len(self._count):
            self._count[j] = 0.0
        if self.journal:
            self.journal = {pair: w for pair, w in self.journal.items() if item not in pair}

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        i = self.catalog.add(item, ts)
        scale = self.rescale(ts) * (1.0 if clicked else self.view_weight)
        self._count = grow_rows(self._count, i + 1)
        self._count[i] += scale
        hist = self.recent.get(user)
        if hist is None:
            hist = self.recent[user] = deque(maxlen=self.window)
        ids, journal, neighbours = self.catalog.ids, self.journal, self.neighbours
        gone = self.catalog.retired_indices  # users' recent items may still hold some
        mine = None
        keep_lists = self.keep_lists
        # ~4 pairs per event, in the hottest loop of learning: the lists are fetched inline.
        for dist, j in enumerate(reversed(hist), start=1):
            if dist > self.pair_window:
                break
            if j == i or (gone and j in gone):
                continue
            w = scale / dist
            if keep_lists:
                if mine is None:
                    mine = neighbours.get(i)
                    if mine is None:
                        mine = neighbours[i] = NeighbourList()
                mine.add(j, w)
                if mine.n > 2 * self.max_neighbours:  # prune lazily: amortised O(1) per update
                    mine.prune(self.max_neighbours)
                theirs = neighbours.get(j)
                if theirs is None:
                    theirs = neighbours[j] = NeighbourList()
                theirs.add(i, w)
                if theirs.n > 2 * self.max_neighbours:
                    theirs.prune(self.max_neighbours)
            if journal is not None:
                key = (ids[j], item)
                journal[key] = journal.get(key, 0.0) + w
        hist.append(i)

    def set_neighbours(self, j: int, idx: np.ndarray, w: np.ndarray) -> None:
        """Replace item ``j``'s neighbours (raw weights), e.g. with the shared copy; retired
        items are left out (another worker's list may not have dropped them yet)."""
        gone = self.catalog.retired_rows
        if len(gone):
            if self.catalog.retired[j]:
                return
            keep = ~np.isin(idx, gone)
            idx, w = idx[keep], w[keep]
        self.neighbours[j] = NeighbourList.from_pairs(idx, w)

    def _cells(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (user row, neighbour item, raw weight) the users' recent items contribute, a
        neighbour's weight divided by how far back its item is; repeated cells add up."""
        idx_parts, w_parts, rows, factors = [], [], [], []
        for r, user in enumerate(users):
            for dist, j in enumerate(reversed(self.recent.get(user, ())), start=1):
                nb = self.neighbours.get(j)
                if nb is not None and nb.n:
                    idx, w = nb.arrays()
                    idx_parts.append(idx)
                    w_parts.append(w)
                    rows.append(r)
                    factors.append(1.0 / dist)
        if not idx_parts:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0)
        # Per-list rows and 1/distance factors applied once over the concatenation.
        sizes = np.fromiter(map(len, idx_parts), np.int64, len(idx_parts))
        weights = np.concatenate(w_parts) * np.repeat(np.array(factors), sizes)
        return np.repeat(np.array(rows, np.int64), sizes), np.concatenate(idx_parts), weights

    def _scale(self, items: np.ndarray, now: float) -> np.ndarray | float:
        """What turns raw weights of ``items`` into scores at ``now``: the decay (raw weights
        are relative to the epoch, up to 2**512; decayed they are ordinary magnitudes, which
        float32 selection downstream needs) and the popularity damping."""
        decay = 2.0 ** (-(max(now, self.epoch) - self.epoch) / self.half_life_s) \
            if self.epoch is not None else 1.0
        if not self.popularity_damping:
            return decay
        self._count = grow_rows(self._count, len(self.catalog))
        count = self._count[items] * decay
        # An item with no count has no neighbour weight either: its damping is irrelevant.
        damping = np.zeros(len(items))
        np.power(count, -self.popularity_damping, out=damping, where=count > 1e-300)
        return damping * decay

    def score_many(self, users, now: float = 0.0) -> np.ndarray:
        """All users' scores in one ``bincount`` over (user, neighbour) cells."""
        n = len(self.catalog)
        rows, items, weights = self._cells(users)
        if not len(rows):
            return np.zeros((len(users), n))
        S = np.bincount(rows * n + items, weights, minlength=len(users) * n
                        ).reshape(len(users), n)
        S *= self._scale(np.arange(n), now)
        return S

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        n = len(self.catalog)
        if self.dense_at(n):
            return super().scores_for(users, now)
        rows, items, weights = self._cells(users)
        return SparseScores(rows, items, weights * self._scale(items, now), n, len(users),
                            self.floor)

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]
