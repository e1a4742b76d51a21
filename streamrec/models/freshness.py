"""Freshness: newly uploaded items, so they are recommendable before anyone has seen them."""

from __future__ import annotations

import numpy as np

from streamrec.models.base import CandidateSource
from streamrec.models.candidates import ScoresOf
from streamrec.models.catalog import Catalog


class Freshness(CandidateSource):
    """Scores items by how recently they appeared: ``2 ** (-age / half_life_s)``.

    Items enter through :meth:`add` (an upload) or their first interaction. Only items younger
    than ``max_age_s`` are proposed.

    Examples
    --------
    >>> fresh = Freshness(half_life_s=60)
    >>> fresh.add_item("old", ts=0); fresh.add_item("new", ts=100)
    >>> [(r.item_id, round(r.score, 4)) for r in fresh.recommend("anyone", k=5, now=120)]
    [('new', 0.7937), ('old', 0.25)]
    """

    name = "fresh"
    retrieves_at_scale = True

    def __init__(self, catalog: Catalog | None = None, half_life_s: float = 3600.0,
                 max_age_s: float = 7 * 86400.0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.half_life_s = half_life_s
        self.max_age_s = max_age_s
        #: Catalogue indices newest first (ties by index), for the first ``len`` items.
        self._by_time = np.empty(0, np.int64)
        self._times = np.empty(0, np.float64)  # -first_seen of ``_by_time``: ascending

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        self.catalog.add(item, ts)

    def score_all(self, user: str | None = None, now: float = 0.0) -> np.ndarray:
        return self.no_opinion_on_retired(self._scores(self.catalog.first_seen, now))

    def _scores(self, first_seen: np.ndarray, now: float) -> np.ndarray:
        age = np.maximum(now - first_seen, 0.0)
        s = 2.0 ** (-age / self.half_life_s)
        s[age > self.max_age_s] = 0.0
        return s

    def _scores_of(self, items: np.ndarray, now: float) -> np.ndarray:
        """Scores of ``items`` only (a catalogue too large to score whole every batch)."""
        s = self._scores(self.catalog.first_seen[items], now)
        s[self.catalog.retired[items]] = self.floor
        return s

    def ranked_all(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Scores and their order, best first, without sorting the catalogue every batch: the
        order by first-seen time (newest first, ties by index) changes only when an item
        enters, since an item's time is set once. Items that appeared at or after ``now`` all
        score 1 and lead, in index order; the order of items too old to score is irrelevant."""
        fs = self.catalog.first_seen
        old = len(self._by_time)
        if old != len(fs):
            # Merged in rather than sorted again: a large catalogue gains a few items a batch.
            new = old + np.argsort(-fs[old:], kind="stable")
            at = np.searchsorted(self._times, -fs[new], side="right")
            self._by_time = np.insert(self._by_time, at, new)
            self._times = np.insert(self._times, at, -fs[new])
        order = self._by_time
        ahead = int(np.searchsorted(self._times, -now, side="right"))  # first_seen >= now
        if ahead > 1:
            order = np.concatenate([np.sort(order[:ahead]), order[ahead:]])
        if self.dense_at(len(fs)):
            return self.score_all(None, now), order
        return ScoresOf(lambda items: self._scores_of(items, now), len(fs)), order
