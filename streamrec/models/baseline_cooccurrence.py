"""A simple baseline every evaluation reports: items co-clicked with the user's recent clicks,
plus popularity."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from streamrec.models.base import CandidateSource
from streamrec.models.catalog import Catalog
from streamrec.models.popularity import DecayedPopularity


class CoOccurrenceBaseline(CandidateSource):
    """Counts how often two items were clicked within ``window`` clicks of each other by one
    user (no decay, no damping, views ignored); a user's score for an item is the sum of its
    counts with each of their last ``window`` clicks, plus ``popularity_weight *`` decayed
    popularity / the catalogue's top popularity (which orders ties and serves new users).

    Examples
    --------
    >>> b = CoOccurrenceBaseline()
    >>> for user, items in {"ann": ["tea", "cake"], "bob": ["tea", "cake"], "cid": ["tea", "jam"]}.items():
    ...     for item in items:
    ...         b.learn_one(user, item, ts=0.0)
    >>> b.learn_one("dan", "tea", ts=1.0)
    >>> [r.item_id for r in b.recommend("dan", k=2, exclude=["tea"], now=1.0)]
    ['cake', 'jam']
    """

    name = "baseline_cooccurrence"

    def __init__(self, catalog: Catalog | None = None, window: int = 20,
                 popularity_weight: float = 0.1, half_life_s: float = 86400.0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.window = window
        self.pairs: dict[int, Counter[int]] = {}
        self.recent: dict[str, deque[int]] = {}
        self.popularity = DecayedPopularity(self.catalog, half_life_s=half_life_s)
        self.popularity_weight = popularity_weight

    def forget_user(self, user: str) -> None:
        self.recent.pop(user, None)

    def forget_item(self, item: str) -> None:
        super().forget_item(item)
        self.popularity.forget_item(item)
        j = self.catalog.index.get(item)
        if j is None:
            return
        self.pairs.pop(j, None)
        for counts in self.pairs.values():
            counts.pop(j, None)
        for recent in self.recent.values():
            while j in recent:
                recent.remove(j)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        self.popularity.learn_one(user, item, ts, clicked)
        if not clicked:
            return
        j = self.catalog.add(item, ts)
        recent = self.recent.setdefault(user, deque(maxlen=self.window))
        for i in set(recent) - {j}:
            self.pairs.setdefault(i, Counter())[j] += 1
            self.pairs.setdefault(j, Counter())[i] += 1
        recent.append(j)

    def score_many(self, users: Sequence[str], now: float = 0.0) -> np.ndarray:
        S = np.zeros((len(users), len(self.catalog)))
        S += self.popularity_weight * self.popularity.share_of_top(now)
        for r, u in enumerate(users):
            for i in self.recent.get(u, ()):
                counts = self.pairs.get(i)
                if counts:
                    S[r, list(counts)] += list(counts.values())
        return S

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]
